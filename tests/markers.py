"""Marker files tasks write for tests to wait on."""

from __future__ import annotations

import os
from pathlib import Path


def announce(marker: Path) -> None:
    """Write this process's pid to ``marker`` in one step (a rename): a test that sees
    the file never reads it half-written."""
    partial = marker.with_name(f"{marker.name}.partial")
    partial.write_text(str(os.getpid()))
    partial.replace(marker)
