"""Imported by the workers of ``tests.apps_included:app`` only."""

import time
from pathlib import Path

from pprunner.errors import TimeLimitExceeded
from tests.apps_included import app


@app.task(name="slow_once", time_limit=0.5, retry_on=(TimeLimitExceeded,), max_attempts=2)
def slow_once(marker: str) -> str:
    """Overruns its hard limit on the first attempt only."""
    first = not Path(marker).exists()
    Path(marker).touch()
    if first:
        time.sleep(60)
    return "second attempt"
