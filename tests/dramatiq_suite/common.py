"""Copied next to Dramatiq's tests as ``tests/common.py`` (its source distribution
leaves that module out): the skip markers its command-line tests import."""

from __future__ import annotations

import os
import platform

import pytest

skip_on_windows = pytest.mark.skipif(platform.system() == "Windows",
                                     reason="POSIX signals and process groups")
skip_on_pypy = pytest.mark.skipif(platform.python_implementation() == "PyPy",
                                  reason="time limits need CPython")
#: Dramatiq's project skips these on its own CI services, not on others
skip_in_ci = pytest.mark.skipif(bool(os.getenv("APPVEYOR") or os.getenv("GITHUB_ACTION")),
                                reason="skipped on Dramatiq's CI services")
