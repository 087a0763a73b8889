"""How the commands write numbers, counts, tables and URLs, so every command says
them alike."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

from .invocation import Status


def counts_text(counts: dict[Status, int]) -> str:
    """``pending 0, running 1, ...``: counts by status as every command shows them."""
    return ", ".join(f"{status.value.lower()} {n}" for status, n in counts.items())


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows (the first one the header) as lines of left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [("  " + "  ".join(cell.ljust(width)
                              for cell, width in zip(row, widths, strict=True))).rstrip()
            for row in rows]


def duration_text(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3m05s``, ``2h07m``: short, and exact where it matters."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def memory_text(size: int | None) -> str:
    """Resident memory in MiB, or ``-`` when it is not known (another host)."""
    return "-" if size is None else f"{size / 2**20:.0f} MiB"


def shown_url(url: str) -> str:
    """A backend URL fit for a screen: a password in it is replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
