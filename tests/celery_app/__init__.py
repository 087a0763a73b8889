"""The Celery app the Celery pool's tests run in a real ``celery worker``
(``celery -A tests.celery_app worker --pool custom``).

Broker and result backend come from the environment the test gives the
worker (:data:`BROKER_ENV`, :data:`BACKEND_ENV`); the test process sends tasks
by name with an app of its own (:func:`make_app`). Each child records Celery's
``worker_process_init`` and ``worker_process_shutdown`` as a file in
:data:`MARKERS_ENV`, named after its pid.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded

BROKER_ENV = "CELERY_TEST_BROKER"
BACKEND_ENV = "CELERY_TEST_BACKEND"
QUEUE_ENV = "CELERY_TEST_QUEUE"
MARKERS_ENV = "CELERY_TEST_MARKERS"
#: set to make every child die in Celery's initializer (a worker_process_init receiver exits)
FAIL_INIT_ENV = "CELERY_TEST_FAIL_INIT"
#: set to choose the pool by the ``worker_pool`` setting instead of ``--pool custom``
POOL_SETTING_ENV = "CELERY_TEST_POOL_SETTING"
POOL = "pprunner_plugins.celery:TaskPool"
#: kombu's filesystem transport keeps its messages in this folder (``filesystem://``)
FOLDER_ENV = "CELERY_TEST_BROKER_FOLDER"


def make_app(broker: str, backend: str, queue: str) -> Celery:
    app = Celery("tests.celery_app", broker=broker, backend=backend, set_as_current=False)
    folder = os.environ.get(FOLDER_ENV)
    if broker.startswith("filesystem:") and folder:
        app.conf.broker_transport_options = {
            "data_folder_in": folder, "data_folder_out": folder,
            "control_folder": os.path.join(folder, "control")}
    app.conf.update(
        task_default_queue=queue,
        task_track_started=True,
        result_expires=600,
        broker_connection_retry_on_startup=True,
        worker_pool_restarts=True,
    )
    return app


app = make_app(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/7"),
               os.environ.get(BACKEND_ENV, "redis://127.0.0.1:6379/7"),
               os.environ.get(QUEUE_ENV, "pprunner-tests"))
if os.environ.get(POOL_SETTING_ENV):
    app.conf.worker_pool = POOL


def _mark(kind: str) -> None:
    folder = os.environ.get(MARKERS_ENV)
    if folder:
        Path(folder, f"{kind}-{os.getpid()}").touch()


@signals.worker_process_init.connect
def _process_init(**_: Any) -> None:
    if os.environ.get(FAIL_INIT_ENV):
        os._exit(3)
    _mark("init")


@signals.worker_process_shutdown.connect
def _process_shutdown(**_: Any) -> None:
    _mark("shutdown")


@app.task(name="t.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="t.whoami")
def whoami() -> int:
    return os.getpid()


@app.task(name="t.allocate")
def allocate(mib: int) -> int:
    """Takes ``mib`` MiB and gives them back: the child's peak grows, not its memory."""
    data = b"x" * (mib * 2**20)
    del data
    return os.getpid()


@app.task(name="t.sleep")
def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds}"


@app.task(name="t.sleep_unless_marked")
def sleep_unless_marked(marker: str, seconds: float) -> str:
    """Sleeps on its first run (long enough to be killed); a later run returns at once."""
    if Path(marker).exists():
        return "second run"
    Path(marker).touch()
    ignore_soft_limit(seconds)
    return "first run"


@app.task(name="t.sleep_unless_marked_late", acks_late=True, reject_on_worker_lost=True)
def sleep_unless_marked_late(marker: str, seconds: float) -> str:
    return sleep_unless_marked(marker, seconds)


@app.task(name="t.autoretry", autoretry_for=(ValueError,), max_retries=3,
          default_retry_delay=0)
def autoretry(fail_times: int) -> int:
    from celery import current_task

    retries: int = current_task.request.retries
    if retries < fail_times:
        raise ValueError(f"attempt {retries} fails")
    return retries


@app.task(name="t.retry", bind=True, max_retries=3)
def retry(self: Any, fail_times: int) -> int:
    if self.request.retries < fail_times:
        raise self.retry(countdown=0)
    return int(self.request.retries)


@app.task(name="t.catch_soft_limit")
def catch_soft_limit(seconds: float) -> str:
    """Returns the class of what interrupted it: Celery's own, or it would fail."""
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded as exc:
        return f"{type(exc).__module__}.{type(exc).__qualname__}"
    return "not interrupted"


@app.task(name="t.soft_limited", soft_time_limit=0.5)
def soft_limited() -> str:
    return catch_soft_limit(10)


@app.task(name="t.hard_limited", time_limit=1)
def hard_limited() -> str:
    time.sleep(30)
    return "not interrupted"


@app.task(name="t.ignore_soft_limit")
def ignore_soft_limit(seconds: float) -> str:
    """Sleeps on past its soft limit: only the hard limit ends it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(max(0.0, deadline - time.monotonic()))
    return "not interrupted"


def _meet(tag: str, siblings: int) -> None:
    """Wait until ``siblings`` tasks tagged ``tag`` have started (so they run at once)."""
    folder = Path(os.environ[MARKERS_ENV])
    Path(folder, f"{tag}-{os.getpid()}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + 30
    while len(list(folder.glob(f"{tag}-*"))) < siblings and time.monotonic() < deadline:
        time.sleep(0.01)


@app.task(name="t.parent")
def parent(x: int, tag: str = "", siblings: int = 1, timeout: float = 30) -> int:
    """Waits for a subtask's result inside the task (prefork refuses this)."""
    if tag:
        _meet(tag, siblings)
    result: int = add.delay(x, x).get(timeout=timeout)
    return result


@app.task(name="t.parent_late", acks_late=True)
def parent_late(x: int, timeout: float) -> int:
    return parent(x, timeout=timeout)


@app.task(name="t.parent_of_group")
def parent_of_group(n: int) -> list[int]:
    from celery import group

    results: list[int] = group(add.s(i, i) for i in range(n)).apply_async().get(timeout=30)
    return results


@app.task(name="t.wait_for_itself", bind=True)
def wait_for_itself(self: Any) -> str:
    try:
        self.AsyncResult(self.request.id).get(timeout=5)
    except RuntimeError as exc:
        return str(exc)
    return "waited"
