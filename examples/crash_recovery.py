"""A worker killed in the middle of a task: the task runs again, nothing is lost.

    python -m examples.crash_recovery

The task kills its own worker process with SIGKILL on its first attempt, as
the kernel's out-of-memory killer would. The supervisor sees the death on
the process's sentinel at once, puts the invocation back in the queue, where
the other worker takes it, and starts a replacement worker. The record keeps
what happened to every attempt.
"""

from __future__ import annotations

import os
import signal

from pprunner import App, Supervisor, current_context

app = App()  # sqlite:///.pprunner/pprunner.db unless PPRUNNER_BACKEND says otherwise


@app.task(max_attempts=3)
def double_after_a_crash(x: int) -> int:
    context = current_context()
    assert context is not None and context.invocation is not None
    if context.invocation.attempts == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * x


def main() -> None:
    with Supervisor(app, processes=2):
        handle = double_after_a_crash.enqueue(21)
        value = handle.result(timeout=60)
    invocation = handle.invocation()
    print(f"result {value} after {invocation.attempts} attempts")
    for number, error in enumerate(invocation.history, start=1):
        print(f"attempt {number}: {error.type}: {error.message}")


if __name__ == "__main__":
    main()
