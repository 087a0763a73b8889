"""The PostgreSQL backend beyond the contract: its URL, a schema per app and its
migrations, LISTEN/NOTIFY with the poll that covers a lost notification, and a run
of 500 tasks whose connections the server keeps terminating."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import pprunner_plugins.postgres
import pprunner_plugins.postgres.schema
from pprunner import App, Status, Supervisor, gather
from pprunner.errors import BackendError, ConfigError
from pprunner.invocation import ErrorInfo
from pprunner.testing.backend_contract import THREAD_TIMEOUT, Background, make_invocation
from pprunner_plugins.postgres import PostgresBackend, split_url
from tests import apps
from tests.conftest import wait_until
from tests.postgres_server import admin_connection
from tests.test_backend_contract import assert_waiters_told_at_once

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def open_backend(postgres_url: str) -> Iterator[Callable[..., PostgresBackend]]:
    """Opens instances on the test's schema (or another URL), as separate processes
    would; all closed after."""
    opened: list[PostgresBackend] = []

    def open_one(url: str = postgres_url) -> PostgresBackend:
        opened.append(PostgresBackend(url))
        return opened[-1]

    yield open_one
    for backend in opened:
        backend.close()


def schema_of(url: str) -> str:
    return split_url(url)[1]


def terminate(application_name: str) -> int:
    """``pg_terminate_backend`` every connection named ``application_name``; how many."""
    admin = admin_connection()
    try:
        return sum(done for (done,) in admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = %s", (application_name,)))
    finally:
        admin.close()


@pytest.mark.parametrize("url", ["postgresql://h/db?schema=Upper",
                                 "postgresql://h/db?schema=a-b", "postgres://h/db?schema="])
def test_a_bad_schema_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="bad schema"):
        PostgresBackend(url)


def test_the_url_keeps_libpq_parameters_and_drops_pprunners_own() -> None:
    url, schema, batch = split_url(
        "postgres://u:p@h:5433/db?sslmode=require&schema=app_one&batch=8")
    assert (schema, batch) == ("app_one", 8)
    assert url.startswith("postgresql://u:p@h:5433/db?")
    assert "sslmode=require" in url and "schema" not in url and "batch" not in url
    assert split_url("postgresql://h/db").batch == 1


@pytest.mark.parametrize("batch", ["0", "-1", "two", "1001"])
def test_a_bad_batch_is_a_config_error(batch: str) -> None:
    with pytest.raises(ConfigError, match="bad batch"):
        PostgresBackend(f"postgresql://h/db?batch={batch}")


def test_libpq_options_in_the_url_reach_the_server(
        open_backend: Callable[..., PostgresBackend], postgres_url: str) -> None:
    """A setting for the server's sessions (here, commits that do not wait for the
    disk) is passed on with its space intact."""
    backend = open_backend(f"{postgres_url}&options=-c%20synchronous_commit%3Doff")
    assert backend._rows("SHOW synchronous_commit") == [("off",)]


def test_an_unreachable_server_at_start_is_an_error_at_once() -> None:
    backend = PostgresBackend("postgresql://postgres@127.0.0.1:1/test")
    started = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach PostgreSQL at postgresql://127"):
        backend.counts()
    assert time.monotonic() - started < 5


def test_a_connection_lost_while_the_schema_is_readied_is_an_outage(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend]) -> None:
    """A worker starting just as the server drops its connections waits, and does not
    die as if the server had never been there."""
    import psycopg

    backend = open_backend()
    ready_schema, calls = backend._ready_schema, []

    def dropped_once(connection: object) -> None:
        calls.append(connection)
        if len(calls) == 1:
            raise psycopg.OperationalError("terminating connection due to administrator command")
        ready_schema(connection)

    monkeypatch.setattr(backend, "_ready_schema", dropped_once)
    assert backend.counts()[Status.PENDING] == 0
    assert len(calls) == 2


def test_apps_on_one_database_keep_to_their_own_schema(
        open_backend: Callable[..., PostgresBackend], postgres_url: str) -> None:
    other_url = postgres_url.replace("?schema=", "?schema=other_")
    mine, other = open_backend(), open_backend(other_url)
    try:
        mine.enqueue(invocation := make_invocation())
        assert other.counts()[Status.PENDING] == 0
        assert other.claim("r", 0) is None
        assert mine.claim("r", 0) == mine.get(invocation.id)
    finally:
        admin = admin_connection()
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema_of(other_url)}" CASCADE')
        admin.close()


def test_a_command_that_only_reads_creates_no_schema(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url)
    backend.create = False
    try:
        with pytest.raises(ConfigError, match="no pprunner tables in schema"):
            backend.counts()
    finally:
        backend.close()
    admin = admin_connection()
    try:
        assert admin.execute("SELECT to_regnamespace(%s)", (schema_of(postgres_url),)
                             ).fetchone() == (None,)
    finally:
        admin.close()


def test_an_older_schema_is_migrated_and_keeps_its_rows(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend],
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Tables made by this version gain what a next version's step adds, once."""
    old = open_backend()
    old.enqueue(kept := make_invocation())
    step = "ALTER TABLE {s}.invocations ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"
    migrations = {**pprunner_plugins.postgres.schema.MIGRATIONS, 2: [step]}
    monkeypatch.setattr(pprunner_plugins.postgres.schema, "MIGRATIONS", migrations)
    monkeypatch.setattr(pprunner_plugins.postgres.schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(pprunner_plugins.postgres, "SCHEMA_VERSION", 2)
    with caplog.at_level(logging.INFO, logger="pprunner.postgres"):
        assert open_backend().get(kept.id) == kept
        assert open_backend().counts()[Status.PENDING] == 1  # a second opening: no step
    assert caplog.text.count("from version 1 to 2") == 1
    schema = schema_of(postgres_url)
    admin = admin_connection()
    try:
        assert admin.execute(f'SELECT version FROM "{schema}".schema_version').fetchall() == [(2,)]
        assert admin.execute(f'SELECT priority FROM "{schema}".invocations').fetchall() == [(0,)]
    finally:
        admin.close()


def test_a_schema_newer_than_this_pprunner_is_refused(
        open_backend: Callable[..., PostgresBackend], postgres_url: str) -> None:
    open_backend().counts()
    admin = admin_connection()
    admin.execute(f'UPDATE "{schema_of(postgres_url)}".schema_version SET version = 99')
    admin.close()
    with pytest.raises(BackendError, match="version 99, newer than this pprunner's"):
        open_backend().counts()


def blocked_claim(monkeypatch: pytest.MonkeyPatch, backend: PostgresBackend,
                  fallback: float) -> Background:
    """A claim (timeout 30 s) that has found the queue empty and waits for a notification,
    looking again every ``fallback`` seconds (whether its listener heard itself or not)."""
    monkeypatch.setattr(pprunner_plugins.postgres, "POLL_FALLBACK", fallback)
    monkeypatch.setattr(pprunner_plugins.postgres, "QUIET_FALLBACK", fallback)
    waiting = threading.Event()
    wait_for_work = backend._wait_for_work

    def wait(runner_id: str, timeout: float) -> list[str]:
        if timeout:
            waiting.set()
        return wait_for_work(runner_id, timeout)

    monkeypatch.setattr(backend, "_wait_for_work", wait)
    claimer = Background(lambda: backend.claim("sleeper", timeout=30), name="claimer")
    assert waiting.wait(THREAD_TIMEOUT), "the claim never waited on the empty queue"
    return claimer


def test_an_enqueue_wakes_a_blocked_claim_by_notification(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend]) -> None:
    claimer_backend, producer = open_backend(), open_backend()
    claimer = blocked_claim(monkeypatch, claimer_backend, fallback=30)
    enqueued = time.monotonic()
    producer.enqueue(invocation := make_invocation())
    claimed = claimer.join()
    assert time.monotonic() - enqueued < 1.0, "the claim waited for its fallback"
    assert claimed is not None and claimed.id == invocation.id


def test_a_claim_whose_listener_was_dropped_listens_again_without_spinning(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend],
        postgres_url: str) -> None:
    name = f"listener-{schema_of(postgres_url)}"
    claimer_backend = open_backend(f"{postgres_url}&application_name={name}")
    looks = []
    claim_where = claimer_backend._claim_where
    monkeypatch.setattr(claimer_backend, "_claim_where",
                        lambda *args: looks.append(1) or claim_where(*args))
    claimer = blocked_claim(monkeypatch, claimer_backend, fallback=30)
    assert terminate(name) >= 1  # the listener (and any idle pooled connection)
    wait_until(lambda: len(claimer_backend._listeners) == 1 and len(looks) >= 2,
               what="the claim to look again and listen again")
    assert not claimer.finished_within(0.3)
    assert len(looks) <= 3, f"the claim looked {len(looks)} times: it spins"
    open_backend().enqueue(invocation := make_invocation())
    claimed = claimer.join(timeout=5)
    assert claimed is not None and claimed.id == invocation.id


def test_a_lost_notification_costs_latency_not_the_task(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend],
        postgres_url: str) -> None:
    """A row written without NOTIFY (as through a pooler that drops it) is claimed at
    the next look of the fallback poll."""
    backend = open_backend()
    claimer = blocked_claim(monkeypatch, backend, fallback=0.2)
    invocation = make_invocation()
    admin = admin_connection()
    try:
        admin.execute(f'INSERT INTO "{schema_of(postgres_url)}".invocations '
                      f"({pprunner_plugins.postgres.COLUMNS}) VALUES "
                      f"({', '.join(['%s'] * 17)})",
                      pprunner_plugins.postgres._row_values(invocation))
    finally:
        admin.close()
    claimed = claimer.join()
    assert claimed is not None and claimed.id == invocation.id


def test_an_ending_wakes_waiters_in_another_instance_and_leaves_nothing_behind(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend],
        postgres_url: str) -> None:
    owner, watcher = open_backend(), open_backend()
    table = f'"{schema_of(postgres_url)}".waiters'
    assert_waiters_told_at_once(monkeypatch, owner, watcher,
                                lambda: owner._rows(f"SELECT count(*) FROM {table}")[0][0])


def test_a_connection_the_server_closed_while_unused_is_no_outage(
        open_backend: Callable[..., PostgresBackend], postgres_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    name = f"idle-{schema_of(postgres_url)}"
    backend = open_backend(f"{postgres_url}&application_name={name}")
    backend.enqueue(make_invocation())
    assert terminate(name) == 1
    with caplog.at_level(logging.WARNING, logger="pprunner.postgres"):
        assert backend.claim("r", 0) is not None
    assert "unreachable" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 16])
def test_500_tasks_survive_terminated_connections(app: App, postgres_url: str,
                                                  batch: int) -> None:
    """Every connection of the run (workers', supervisor's, producer's, listeners) is
    terminated by the server four times while 500 tasks run: each runs once, SUCCESS.
    A reply lost with its connection is found by the resend (a claim by its start time,
    a completion by its owner), so none is run twice; with batches too."""
    name = f"run-{schema_of(postgres_url)}"
    app.configure(source="the test",
                  backend=f"{postgres_url}&application_name={name}&batch={batch}")
    handles = [apps.add.enqueue(n, 1) for n in range(500)]
    terminated = []
    with Supervisor(app, processes=2):
        for done in (50, 150, 250, 350):
            wait_until(lambda d=done: app.backend.counts()[Status.SUCCESS] >= d, timeout=60,
                       what=f"{done} tasks done")
            terminated.append(terminate(name))
        results = gather(handles, timeout=120)
    assert results == [n + 1 for n in range(500)]
    assert all(terminated), terminated
    invocations = [h.invocation() for h in handles]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    assert {i.attempts for i in invocations} == {1}, [i for i in invocations if i.attempts > 1]


def test_a_completion_a_server_crash_lost_runs_again_after_the_outage(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend],
        postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A completion is committed without waiting for the disk: a server crash may lose
    it, leaving its invocation RUNNING for a worker that moved on. That worker, idle
    again once its connections were lost, hands it back, and it runs again."""
    name = f"crash-{schema_of(postgres_url)}"
    backend = open_backend(f"{postgres_url}&application_name={name}")
    backend.enqueue(invocation := make_invocation())
    claimed = backend.claim("sleeper", 0)
    assert claimed is not None
    assert backend.complete_and_claim(claimed.id, "sleeper", b"1") is None
    admin = admin_connection()
    try:  # what the crash leaves: the completion's commit never reached the disk
        admin.execute(f'UPDATE "{schema_of(postgres_url)}".invocations SET status = '
                      "'RUNNING', result = NULL, finished_at = NULL WHERE id = %s",
                      (invocation.id,))
    finally:
        admin.close()
    claimer = blocked_claim(monkeypatch, backend, fallback=30)
    with caplog.at_level(logging.WARNING, logger="pprunner.postgres"):
        assert terminate(name) >= 1  # the crash's lost connections
        again = claimer.join()
    assert again is not None and again.id == invocation.id
    assert again.attempts == 1  # handed back as never started: the worker did not die
    assert "the server lost" in caplog.text


def counted_looks(monkeypatch: pytest.MonkeyPatch, backend: PostgresBackend) -> list[int]:
    """One item per look ``backend`` takes at its queue from now on."""
    looks: list[int] = []
    claim_where = backend._claim_where
    monkeypatch.setattr(backend, "_claim_where",
                        lambda *args: looks.append(1) or claim_where(*args))
    return looks


def test_an_idle_claim_whose_listener_heard_itself_sends_nothing_while_it_waits(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend]) -> None:
    """The worker loop claims with a timeout, again and again: once the queue was found
    empty and nothing was notified since, a claim waits without looking."""
    monkeypatch.setattr(pprunner_plugins.postgres, "POLL_FALLBACK", 0.05)
    backend, producer = open_backend(), open_backend()
    # the first: a listener, which hears itself (maybe after a look or two at 0.05 s)
    assert backend.claim("sleeper", 0.3) is None
    assert "sleeper" in backend._heard
    looks = counted_looks(monkeypatch, backend)
    assert [backend.claim("sleeper", 0.2) for _ in range(3)] == [None] * 3
    assert not looks, f"{len(looks)} looks at an empty queue nothing was notified to"
    producer.enqueue(invocation := make_invocation())
    claimed = backend.claim("sleeper", 5)
    assert claimed is not None and claimed.id == invocation.id
    assert len(looks) == 1


def test_a_retry_waiting_for_its_time_is_claimed_when_due_without_polling(
        monkeypatch: pytest.MonkeyPatch, open_backend: Callable[..., PostgresBackend]) -> None:
    backend, owner = open_backend(), open_backend()
    owner.enqueue(invocation := make_invocation())
    assert owner.claim("owner", 0) is not None
    claimer = blocked_claim(monkeypatch, backend, fallback=30)
    looks = counted_looks(monkeypatch, backend)
    due = time.time() + 0.5
    owner.retry(invocation.id, "owner", ErrorInfo("E", "again"), due)
    claimed = claimer.join(timeout=10)
    assert claimed is not None and claimed.id == invocation.id
    assert time.time() >= due
    assert len(looks) == 2  # told of the retry (not due yet), then at its time
