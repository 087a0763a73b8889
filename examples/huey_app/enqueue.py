"""Enqueue a few tasks and print what became of them.

    python enqueue.py      (from this folder, beside a running `pprunner huey tasks.huey`)
"""

from __future__ import annotations

import tasks
from huey.exceptions import TaskException


def main() -> None:
    results = {"whereami": [tasks.whereami() for _ in range(3)],
               "add": [tasks.add(2, 3)], "slow": [tasks.slow(5)], "crash": [tasks.crash()]}
    for name, handles in results.items():
        for handle in handles:
            try:
                print(f"{name}: {handle.get(blocking=True, timeout=30)}")
            except TaskException as exc:
                print(f"{name}: failed: {exc.metadata['error']}")


if __name__ == "__main__":
    main()
