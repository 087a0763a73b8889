"""The supervisor's private metrics folder: made at boot, removed at stop.

It lives in the per-user runtime folder (:mod:`pprunner.runtime`: mode 0700,
checked to be this user's alone), under ``metrics/<supervisor id>``. The
supervisor holds an exclusive ``flock`` on ``metrics/<supervisor id>.lock``
while it runs; the kernel releases it however the process ends, so a
supervisor that starts removes the folders whose lock nobody holds any more:
those of supervisors that were SIGKILLed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from pprunner import runtime

from .tally import METRICS_FOLDER, folder_of

#: how often the folder is made again when a concurrent ``runtime.prune()`` removed
#: the (then empty) metrics folder between its creation and ours
REMAKE_ATTEMPTS = 5
LOCK_SUFFIX = ".lock"


class MetricsFolder:
    """``metrics/<supervisor id>``, owned by this process while it is open."""

    def __init__(self, supervisor_id: str) -> None:
        self.path = folder_of(supervisor_id)
        self._lock_path = self.path.with_name(supervisor_id + LOCK_SUFFIX)
        for attempts_left in reversed(range(REMAKE_ATTEMPTS)):
            try:
                runtime.folder(METRICS_FOLDER)
                self._lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                break
            except FileNotFoundError:
                if not attempts_left:
                    raise
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        remove_abandoned(self.path.parent)
        self.path.mkdir(mode=0o700)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self._lock_path.unlink()
        os.close(self._lock)


def remove_abandoned(metrics: Path) -> None:
    """Remove the folders (and locks) of supervisors that no longer run: those whose
    lock can be taken. A folder without a lock file is left alone."""
    for lock_path in metrics.glob(f"*{LOCK_SUFFIX}"):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # removed by its owner meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its supervisor runs
        else:
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
        finally:
            os.close(fd)
