"""Sends the example's tasks to a running worker and prints what comes back."""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import add, app, dies_once, patient


def main() -> None:
    print("add:", [r.get(timeout=30) for r in [add.delay(i, i) for i in range(5)]])
    print("patient:", patient.delay(10).get(timeout=30))
    with tempfile.TemporaryDirectory() as folder:
        print("dies_once:", dies_once.delay(str(Path(folder, "ran"))).get(timeout=60))
    app.close()


if __name__ == "__main__":
    main()
