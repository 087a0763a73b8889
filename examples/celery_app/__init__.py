"""A Celery project on pprunner's pool: nothing here knows about pprunner.

Start a worker with pprunner's pool instead of prefork (one option), then
send it tasks::

    python -m pip install -e '.[celery]'
    celery -A examples.celery_app worker --pool pprunner -c 4 -l INFO
    python -m examples.celery_app

Broker and result backend: ``$CELERY_BROKER_URL`` and
``$CELERY_RESULT_BACKEND`` (Celery reads both), default Redis database 11 on
localhost: a database of its own, not the default 0 other applications use.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

REDIS = "redis://127.0.0.1:6379/11"

app = Celery("examples.celery_app",
             broker=os.environ.get("CELERY_BROKER_URL", REDIS),
             backend=os.environ.get("CELERY_RESULT_BACKEND", REDIS))
app.conf.update(
    task_track_started=True,
    # pprunner's own settings, with a pprunner_ prefix (docs/hosts/celery.md)
    pprunner_start_method="spawn",
    pprunner_boot_timeout=30,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(soft_time_limit=1)
def patient(seconds: float) -> str:
    """Gives up cleanly at its soft limit: Celery's own exception reaches it."""
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "stopped at the soft limit"
    return "done"


@app.task(acks_late=True, reject_on_worker_lost=True)
def dies_once(marker: str) -> str:
    """Its first run kills its own child, as the OOM killer would; Celery gets the
    message back and the second run succeeds."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return f"survived, in child {os.getpid()}"
