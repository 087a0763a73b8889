"""Readable process titles, so ``ps`` shows which worker runs which task."""

from __future__ import annotations

import setproctitle


def set_title(title: str) -> None:
    setproctitle.setproctitle(title)
