"""The quickstart: a task, and a script that enqueues 1,000 of them.

    python -m examples.quickstart 1000          # enqueue 1,000 invocations of add
    pprunner run --app examples.quickstart:app --processes 2 --burst
    pprunner status --app examples.quickstart:app
"""

from __future__ import annotations

import sys

from pprunner import App

app = App()  # the default backend: sqlite:///.pprunner/pprunner.db


@app.task
def add(x: int, y: int) -> int:
    return x + y


def main(count: int) -> None:
    handles = [add.enqueue(n, n) for n in range(count)]
    print(f"enqueued {len(handles)} invocations of {add.name}; first id {handles[0].id}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
