"""The built-in backends against the Backend contract, plus what only SQLite promises:
several instances (processes) on one file, riding out a locked database, and a
doorbell that wakes blocked claimers without polling. A backend with the core
alone (tests/core_backend.py) runs the core's tests; test_capabilities.py checks
that it skips the rest."""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pprunner.backend
import pprunner_plugins.sqlite
from pprunner.backend import Backend
from pprunner.errors import ConfigError
from pprunner.invocation import ErrorInfo, Status
from pprunner.plugins import get_plugin_manager
from pprunner.testing import BackendContract, make_invocation
from pprunner.testing.backend_contract import (
    THREAD_TIMEOUT,
    Background,
    assert_claimed_once_each,
    claim_until_empty,
)
from pprunner_plugins.memory import MemoryBackend
from pprunner_plugins.sqlite import SQLiteBackend
from tests.conftest import wait_until
from tests.core_backend import CoreOnlyBackend


@pytest.mark.memory
class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> Iterator[MemoryBackend]:
        backend = MemoryBackend("memory://")
        yield backend
        backend.close()

    def test_it_refuses_worker_processes(self, backend: MemoryBackend) -> None:
        assert backend.supports_processes is False


class TestCoreOnlyBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> Iterator[CoreOnlyBackend]:
        backend = CoreOnlyBackend("core://")
        yield backend
        backend.close()


@contextlib.contextmanager
def signalled_on_log(logger_name: str, text: str) -> Iterator[threading.Event]:
    """An event set when ``logger_name`` logs a warning containing ``text``, from any thread."""
    event = threading.Event()

    class Signal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                event.set()

    logger = logging.getLogger(logger_name)
    handler = Signal(logging.WARNING)
    level = logger.level
    logger.setLevel(logging.WARNING)  # even if the run was started with a quieter --log-level
    logger.addHandler(handler)
    try:
        yield event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class TestSQLiteBackend(BackendContract):
    @pytest.fixture
    def db_path(self, tmp_path: Path) -> Path:
        return tmp_path / "contract.db"

    @pytest.fixture
    def open_backend(self, db_path: Path) -> Iterator[Callable[[], SQLiteBackend]]:
        """Opens instances on the same file, as separate processes would; all closed after."""
        opened: list[SQLiteBackend] = []

        def open_one() -> SQLiteBackend:
            opened.append(SQLiteBackend(f"sqlite:///{db_path}"))
            return opened[-1]

        yield open_one
        for backend in opened:
            backend.close()

    @pytest.fixture
    def backend(self, open_backend: Callable[[], SQLiteBackend]) -> SQLiteBackend:
        return open_backend()

    @pytest.mark.parametrize("url", ["sqlite://nothing", "sqlite:///", "sqlite:/x.db"])
    def test_a_bad_url_is_a_config_error(self, url: str) -> None:
        with pytest.raises(ConfigError, match="bad SQLite URL"):
            SQLiteBackend(url)

    def test_two_slashes_get_a_hint_at_three(self) -> None:
        with pytest.raises(ConfigError, match=r"\(did you mean sqlite:///jobs\.db\?\)"):
            SQLiteBackend("sqlite://jobs.db")

    def test_opened_for_an_existing_store_only_it_creates_nothing(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/no/such/folder/jobs.db"
        backend = get_plugin_manager().registry.backend_for(url, create=False)
        try:
            with pytest.raises(ConfigError, match=r"^no SQLite database at .*/no/such/folder/"
                                                  r"jobs\.db \(backend 'sqlite:///"):
                backend.counts()
        finally:
            backend.close()
        assert list(tmp_path.iterdir()) == []

    def test_opened_for_an_existing_store_only_it_uses_one_that_exists(
            self, backend: SQLiteBackend) -> None:
        backend.enqueue(invocation := make_invocation())
        existing = get_plugin_manager().registry.backend_for(backend.url, create=False)
        try:
            assert existing.get(invocation.id) == invocation
        finally:
            existing.close()

    def test_instances_on_one_file_never_claim_the_same_invocation(
            self, open_backend: Callable[[], SQLiteBackend]) -> None:
        producer = open_backend()
        invocations = [make_invocation() for _ in range(60)]
        for invocation in invocations:
            producer.enqueue(invocation)
        runners = [f"process-{n}" for n in range(4)]
        start = threading.Barrier(len(runners))
        threads = {runner: Background(functools.partial(claim_until_empty, open_backend(),
                                                        runner, start), name=runner)
                   for runner in runners}
        claims = {runner: thread.join() for runner, thread in threads.items()}
        assert_claimed_once_each(claims, {i.id for i in invocations})
        assert producer.counts()[Status.RUNNING] == len(invocations)

    def test_a_claim_rides_out_a_locked_database(
            self, monkeypatch: pytest.MonkeyPatch, db_path: Path,
            open_backend: Callable[[], SQLiteBackend]) -> None:
        # A short busy timeout makes the claim give up inside SQLite quickly, so
        # the backend's own retry loop (_retrying) is what has to carry it through.
        monkeypatch.setattr(pprunner_plugins.sqlite, "BUSY_TIMEOUT_MS", 20)
        backend = open_backend()
        invocation = make_invocation()
        backend.enqueue(invocation)  # opens the connection (and schema) before the lock

        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with signalled_on_log("pprunner.sqlite", "is locked, retrying") as retrying:
                claimer = Background(lambda: backend.claim("patient", timeout=0), name="claimer")
                assert retrying.wait(THREAD_TIMEOUT), "the claim never met the locked database"
                blocker.execute("ROLLBACK")
            claimed = claimer.join()
        finally:
            blocker.close()
        assert claimed is not None and claimed.id == invocation.id

    def test_an_enqueue_wakes_a_blocked_claim_without_polling(
            self, monkeypatch: pytest.MonkeyPatch,
            open_backend: Callable[[], SQLiteBackend]) -> None:
        """claim_timeout is only a fallback: a claimer blocked for 10 s gets new work
        from another instance (another process) at once, through the doorbell."""
        claimer_backend, producer = open_backend(), open_backend()
        # Enqueue only once the claim has found the queue empty and is about to
        # block, or it might find the work on its first look and prove nothing.
        blocking = threading.Event()
        doorbell_wait = claimer_backend.doorbell.wait

        def wait(name: str, timeout: float) -> bytes:
            blocking.set()
            return doorbell_wait(name, timeout)

        monkeypatch.setattr(claimer_backend.doorbell, "wait", wait)
        claimer = Background(lambda: claimer_backend.claim("sleeper", timeout=10),
                             name="claimer")
        assert blocking.wait(THREAD_TIMEOUT), "the claim never blocked on the empty queue"
        invocation = make_invocation()
        enqueued = time.monotonic()
        producer.enqueue(invocation)
        claimed = claimer.join()
        assert time.monotonic() - enqueued < 1.0, "the claim waited for its timeout"
        assert claimed is not None and claimed.id == invocation.id


    def test_an_ending_wakes_a_waiter_in_another_instance_and_leaves_nothing_behind(
            self, monkeypatch: pytest.MonkeyPatch,
            open_backend: Callable[[], SQLiteBackend]) -> None:
        owner, watcher = open_backend(), open_backend()
        assert_waiters_told_at_once(monkeypatch, owner, watcher, lambda: owner._execute(
            "SELECT COUNT(*) FROM waiters")[0][0])
        assert list(watcher.endings.folder.glob("waiter-*")) == []  # sockets released


def assert_waiters_told_at_once(monkeypatch: pytest.MonkeyPatch, owner: Backend,
                                watcher: Backend, waiters_recorded: Callable[[], int]) -> None:
    """Two callers wait (on ``watcher``) for an invocation that ``owner`` completes:
    both see it at once, and ``waiters_recorded`` (the store's count of them) is 0 after."""
    # waiters block 5 s between looks here, so one that sees the ending within 2 s was woken
    monkeypatch.setattr(pprunner.backend, "NOTIFIED_RECHECK", 5.0)
    owner.enqueue(invocation := make_invocation())
    assert owner.claim("owner", 0.05) is not None
    waiters = [Background(lambda: watcher.wait(invocation.id, timeout=30), name=f"waiter {n}")
               for n in range(2)]
    wait_until(lambda: waiters_recorded() == 2, what="both waiters to block")
    owner.complete(invocation.id, "owner", b"1")
    for waiter in waiters:
        assert waiter.join(timeout=2).status is Status.SUCCESS
    assert waiters_recorded() == 0


def test_an_older_sqlite_file_is_migrated(tmp_path: Path) -> None:
    """A database written before retries and headers existed gains their columns and keeps
    its rows."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE invocations (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            task TEXT NOT NULL, serializer TEXT NOT NULL, payload BLOB NOT NULL,
            status TEXT NOT NULL, owner TEXT, attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL, enqueued_at REAL NOT NULL, started_at REAL,
            finished_at REAL, result BLOB, error TEXT);
        INSERT INTO invocations (id, task, serializer, payload, status, attempts, max_attempts,
            enqueued_at) VALUES ('kept', 't', 'json', x'7b7d', 'PENDING', 0, 3, 1.0);
    """)
    old.close()
    backend = SQLiteBackend(f"sqlite:///{path}")
    try:
        claimed = backend.claim("r", 0.05)
        assert claimed is not None and claimed.id == "kept" and claimed.history == ()
        assert claimed.headers == {}
        backend.retry("kept", "r", ErrorInfo("E", "m"), not_before=0)
        assert backend.get("kept").history == (ErrorInfo("E", "m"),)
        backend.enqueue(new := make_invocation(headers={"traceparent": "00-1-2-01"}))
        assert backend.get(new.id).headers == {"traceparent": "00-1-2-01"}
    finally:
        backend.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == \
        pprunner_plugins.sqlite.SCHEMA_VERSION


@pytest.mark.redis
class TestRedisBackend(BackendContract):
    @pytest.fixture
    def backend(self, redis_url: str) -> Iterator[Backend]:
        from pprunner_plugins.redis import RedisBackend

        backend = RedisBackend(redis_url)
        yield backend
        backend.close()


@pytest.mark.postgres
class TestPostgresBackend(BackendContract):
    @pytest.fixture
    def backend(self, postgres_url: str) -> Iterator[Backend]:
        from pprunner_plugins.postgres import PostgresBackend

        backend = PostgresBackend(postgres_url)
        yield backend
        backend.close()


def test_sqlite_checkpoints_its_wal_less_often_than_sqlite_would(tmp_path: Path) -> None:
    """The WAL grows past SQLite's default of 1,000 pages, where SQLite would have
    checkpointed and reused the file from its start, and stops growing at
    WAL_AUTOCHECKPOINT_PAGES, where a commit checkpoints."""
    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'wal.db'}")
    limit = pprunner_plugins.sqlite.WAL_AUTOCHECKPOINT_PAGES
    sizes = []

    def wal_pages() -> int:
        return (tmp_path / "wal.db-wal").stat().st_size // 4096

    try:
        for _ in range(limit):  # several pages an enqueue: the limit is passed well before
            backend.enqueue(make_invocation())
            sizes.append(wal_pages())
    finally:
        backend.close()
    assert max(sizes) > 1500
    assert max(sizes) < limit + 50  # a checkpoint at the limit, then the file is reused
