"""Readable process titles, so ``ps`` shows which worker runs which task."""

from __future__ import annotations

import setproctitle

#: what every title starts with (:func:`keep_prefix`)
_prefix = ""


def keep_prefix(prefix: str) -> None:
    """Start every later title with ``prefix``: a host's own title for its worker
    processes (Celery's ``celeryd: ...``), so the tools that find them by name
    (``pgrep -f celery``) still do."""
    global _prefix
    _prefix = prefix


def set_title(title: str) -> None:
    setproctitle.setproctitle(_prefix + title)
