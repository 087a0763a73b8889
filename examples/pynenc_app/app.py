"""A pynenc app run by pprunner's supervisor: nothing here names pprunner.

    pynenc --app app.app runner start      # in this folder: [tool.pynenc] picks the runner
    python producer.py                     # in another terminal
"""

from __future__ import annotations

import os
import signal

from pynenc import Pynenc

app = Pynenc()


@app.task
def square(x: int) -> int:
    return x * x


@app.task
def sum_of_squares(n: int) -> int:
    """Waits on n sub-invocations: its worker runs other work while it waits."""
    return sum(child.result for child in [square(i) for i in range(n)])


@app.task
def crash_once(marker: str) -> str:
    """Kills its own worker the first time: pprunner reroutes it at once."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived a SIGKILL"
