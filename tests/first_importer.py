"""Tells a test app's module whether a worker imports it, not its supervisor.

However the workers start (multiprocessing or pprunner's own launcher, which
leaves ``multiprocessing.parent_process()`` None), the supervisor imports the
app first, and its workers inherit its environment: the first importer marks
the environment with its pid.
"""

from __future__ import annotations

import os

_MARK = "PPRUNNER_TESTS_FIRST_IMPORTER"


def imported_by_a_child() -> bool:
    return os.environ.setdefault(_MARK, str(os.getpid())) != str(os.getpid())
