"""Tasks that wait for tasks: a recursive fan-out on a fixed pool of 2 workers.

    python -m examples.fan_out 6      # 127 invocations; prints the count and the wall time

Each invocation enqueues two children and waits for both. On a pool where a
waiting task simply blocks its worker this deadlocks as soon as both
workers hold a waiting parent; with pprunner's default ``nested`` wait
strategy a waiting worker runs the children it waits for itself.
"""

from __future__ import annotations

import sys
import time

from pprunner import App, Supervisor, gather

app = App()  # sqlite:///.pprunner/pprunner.db unless PPRUNNER_BACKEND says otherwise


@app.task
def tree(depth: int) -> int:
    """How many invocations ran in this subtree, itself included."""
    if depth == 0:
        return 1
    return 1 + sum(gather([tree.enqueue(depth - 1), tree.enqueue(depth - 1)]))


def main(depth: int) -> None:
    with Supervisor(app, processes=2):
        started = time.perf_counter()
        count = tree.enqueue(depth).result(timeout=300)
        print(f"{count} invocations in {time.perf_counter() - started:.2f} s on 2 workers")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
