"""The ``sqlite://`` backend, the embedded default: one file, many processes.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``. The file
and its folders are created on first use, unless the backend was opened
with ``create=False`` (commands that only read): then a missing file is a
ConfigError. The file is in WAL mode, so readers never block the one writer, with
``synchronous=NORMAL`` (a committed transaction survives a crash of any
process; only a power loss may lose the last ones). Every status change is
one guarded statement or one ``BEGIN IMMEDIATE`` transaction, so claims are
atomic and only the owner can finish an invocation, across any number of
processes and supervisors on the host. Idle claimers block on a
:class:`~pprunner_plugins._doorbell.Doorbell` instead of polling, and so do
callers waiting for invocations to end: a waiter records itself in the
``waiters`` table in the transaction that checks none has ended yet, and
the transaction that ends one removes its waiters' rows and rings them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

import pprunner
from pprunner.backend import (
    Admin,
    Pausing,
    Recovery,
    check_owner_change,
    missing,
    requeued,
    rerouted,
)
from pprunner.errors import BackendError, ConfigError, IllegalTransition
from pprunner.invocation import (
    FINAL_STATUSES,
    OWNED_STATUSES,
    ErrorInfo,
    Invocation,
    RunnerInfo,
    RunnerKind,
    Status,
    counts_template,
    ended_template,
    sources_of,
)

from ._doorbell import STOP, Doorbell

if TYPE_CHECKING:
    import asyncio

    from pprunner.awaiting import EndingsWatcher

logger = logging.getLogger("pprunner.sqlite")
T = TypeVar("T")

#: how long one statement waits for the write lock inside SQLite
BUSY_TIMEOUT_MS = 10_000
#: retries of a whole operation that still found the database locked
LOCKED_RETRIES = 8
#: WAL pages after which a commit checkpoints (SQLite's default: 1,000). The committer
#: then copies every page in the WAL into the database file and syncs both before it can
#: go on; a task dirties ~10 pages (the row and its indexes), so at the default one
#: worker in ~100 tasks stalls on that. A checkpoint writes a page once however often the
#: WAL holds it, and the same few pages change in every task: fewer, larger checkpoints
#: write less. A drain of no-op tasks ran 9 % faster (BENCHMARKS.md), for a WAL file of
#: up to 16 MiB instead of 4 MiB.
WAL_AUTOCHECKPOINT_PAGES = 4000


def _in(statuses: Iterable[Status]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


#: SQL for "has ended": ``status IN ENDED``; the purge names the index built on it, which
#: SQLite uses only for a query whose condition is the index's own
ENDED = _in(FINAL_STATUSES)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS invocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    serializer TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    owner TEXT,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result BLOB,
    error TEXT,
    not_before REAL,
    history TEXT NOT NULL DEFAULT '[]',
    waiting_for TEXT NOT NULL DEFAULT '[]',
    headers TEXT
);
CREATE INDEX IF NOT EXISTS invocations_pending ON invocations (seq) WHERE status = 'PENDING';
CREATE INDEX IF NOT EXISTS invocations_status ON invocations (status);
CREATE INDEX IF NOT EXISTS invocations_owner ON invocations (owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_finished ON invocations (finished_at)
    WHERE status IN {ENDED};
CREATE INDEX IF NOT EXISTS invocations_ended ON invocations (status, finished_at)
    WHERE status IN {ENDED};
CREATE TABLE IF NOT EXISTS waiters (
    invocation_id TEXT NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (invocation_id, waiter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runners (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    supervisor TEXT NOT NULL,
    slot INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    phase TEXT NOT NULL DEFAULT ''
);
"""

#: ``PRAGMA user_version`` of the current schema, and how to bring older files up to it:
#: per version, the (table, column) pairs it added. A table the file does not have yet
#: is made whole by SCHEMA, which runs after the steps (and adds any new index).
SCHEMA_VERSION = 4
MIGRATIONS = {
    2: [("invocations", "not_before REAL"),
        ("invocations", "history TEXT NOT NULL DEFAULT '[]'")],
    3: [("invocations", "waiting_for TEXT NOT NULL DEFAULT '[]'")],
    # headers: NULL when there are none, as for nearly every invocation (no JSON to
    # write or read); phase: what the supervisor last said a worker was doing
    4: [("invocations", "headers TEXT"), ("runners", "phase TEXT NOT NULL DEFAULT ''")],
}

COLUMNS = ("id, task, serializer, payload, status, owner, attempts, max_attempts, "
           "enqueued_at, started_at, finished_at, result, error, not_before, history, waiting_for, "
           "headers")


def _invocation(row: sqlite3.Row | tuple[Any, ...]) -> Invocation:
    (id_, task, serializer, payload, status, owner, attempts, max_attempts, enqueued_at,
     started_at, finished_at, result, error, not_before, history, waiting_for, headers) = row
    return Invocation(id=id_, task=task, serializer=serializer, payload=bytes(payload),
                      status=Status(status), owner=owner, attempts=attempts,
                      max_attempts=max_attempts, enqueued_at=enqueued_at,
                      started_at=started_at, finished_at=finished_at,
                      result=None if result is None else bytes(result),
                      error=ErrorInfo.from_json(error), not_before=not_before,
                      history=tuple(ErrorInfo(**e) for e in json.loads(history)),
                      waiting_for=tuple(json.loads(waiting_for)),
                      headers=json.loads(headers) if headers else {})


def _history(invocation: Invocation) -> str:
    return json.dumps([attrs.asdict(e) for e in invocation.history])


def _claim_sql(among: str) -> str:
    """The one atomic claim statement: the oldest due PENDING row (``among`` narrows it)."""
    return (f"UPDATE invocations SET status = 'RUNNING', owner = :owner, "
            f"attempts = attempts + 1, started_at = :now WHERE seq = (SELECT seq FROM "
            f"invocations WHERE status = 'PENDING' {among}AND (not_before IS NULL OR "
            f"not_before <= :now) ORDER BY seq LIMIT 1) RETURNING {COLUMNS}")


def _change_sql(invocation_id: str, runner_id: str, new: Status,
                values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """An owner-only change as one guarded UPDATE: it matches no row when refused."""
    sets = "".join(f", {column} = ?" for column in values)
    history: tuple[Any, ...] = ()
    if "error" in values:  # every failed attempt's error joins the history
        sets += ", history = json_insert(history, '$[#]', json(?))"
        history = (values["error"],)
    return (f"UPDATE invocations SET status = ?{sets} WHERE id = ? AND owner = ? "
            f"AND status IN {_in(sources_of(new) & OWNED_STATUSES)} RETURNING seq",
            (new.value, *values.values(), *history, invocation_id, runner_id))


#: waiter -> the ids that ended for it, space-separated (what its ring says)
Waiters = dict[str, bytes]


def _take_waiters(db: sqlite3.Connection, ended_ids: Sequence[str]) -> Waiters:
    """Inside the transaction that ended ``ended_ids``: remove their waiters' rows and
    return the waiters, to ring once it is committed. A waiter records itself only while
    none of its invocations has ended, so no waiter can come too late for this."""
    if not ended_ids:
        return {}
    marks = ", ".join("?" * len(ended_ids))
    waiters: dict[str, list[str]] = {}
    for waiter, invocation_id in db.execute(
            f"DELETE FROM waiters WHERE invocation_id IN ({marks}) "
            f"RETURNING waiter, invocation_id", ended_ids):
        waiters.setdefault(waiter, []).append(invocation_id)
    return {waiter: " ".join(ids).encode() for waiter, ids in waiters.items()}


#: the most ids one statement binds (well under SQLite's variable limit)
CHUNK = 500


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def path_of(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        rest = url.partition("://")[2]
        hint = f" (did you mean sqlite:///{rest}?)" if rest and "/" not in rest else ""
        raise ConfigError(f"bad SQLite URL {url!r}: expected sqlite:///relative/path.db "
                          f"or sqlite:////absolute/path.db{hint}")
    return Path(url[len(prefix):])


class SQLiteBackend(Pausing, Admin, Recovery):
    notifies_final = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        if sqlite3.sqlite_version_info < (3, 35):
            raise BackendError(f"the sqlite backend needs SQLite 3.35 or newer; this Python "
                               f"has {sqlite3.sqlite_version}")
        self.path = path_of(url).resolve()
        self.doorbell = Doorbell(str(self.path))
        #: rung by name for the callers waiting for an invocation that ended
        self.endings = Doorbell(f"{self.path}#endings")
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    # -- connection ----------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This process's connection (reopened after a fork), one thread at a time."""
        with self._lock:
            if self._connection is None or self._pid != os.getpid():
                self._connection = self._open()
                self._pid = os.getpid()
            yield self._connection

    def _open(self) -> sqlite3.Connection:
        if not self.create and not self.path.is_file():
            raise ConfigError(f"no SQLite database at {self.path} (backend {self.url!r}); "
                              "check the path: this command does not create one")
        try:
            if self.create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # mode=rw: a file removed since the check above is an error, not a new file
            connection = sqlite3.connect(
                self.path if self.create else f"{self.path.as_uri()}?mode=rw",
                uri=not self.create, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False)
            # switching a new file to WAL can be refused as locked without SQLite's busy
            # wait (another connection opening it at the same moment): retried like the rest
            self._retrying(lambda: connection.execute("PRAGMA journal_mode=WAL"))
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._retrying(lambda: self._create_or_migrate(connection))
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot open SQLite database {self.path}: {exc}") from exc
        return connection

    def _create_or_migrate(self, connection: sqlite3.Connection) -> None:
        """Create the tables in a new file, or bring an older file's up to date."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            exists = connection.execute("SELECT 1 FROM sqlite_master WHERE name = "
                                        "'invocations'").fetchone()
            if exists and version < SCHEMA_VERSION:
                tables = {name for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                    for table, column in MIGRATIONS[step]:
                        if table in tables:
                            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
                logger.info("migrated %s from schema %d to %d", self.path, version,
                            SCHEMA_VERSION)
            for statement in filter(str.strip, SCHEMA.split(";")):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _retrying(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; a database still locked after SQLite's own busy wait
        is retried a bounded number of times with growing pauses, then raised."""
        pause = 0.01
        for attempt in range(LOCKED_RETRIES + 1):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                message = str(exc).lower()
                if attempt == LOCKED_RETRIES or not ("locked" in message or "busy" in message):
                    raise
                logger.warning("database %s is locked, retrying (%s)", self.path, exc)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db() as db:
            self._retrying(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        with self._db() as db:
            return self._retrying(lambda: db.execute(sql, parameters).fetchall())

    # -- producers and workers -------------------------------------------------------

    def enqueue(self, invocation: Invocation) -> None:
        i = invocation
        self._execute(
            f"INSERT INTO invocations ({COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (i.id, i.task, i.serializer, i.payload, i.status.value, i.owner, i.attempts,
             i.max_attempts, i.enqueued_at, i.started_at, i.finished_at, i.result,
             i.error.to_json() if i.error else None, i.not_before, _history(i),
             json.dumps(i.waiting_for), json.dumps(i.headers) if i.headers else None))
        self.doorbell.ring()

    def claim(self, runner_id: str, timeout: float) -> Invocation | None:
        deadline = time.monotonic() + timeout
        self.doorbell.listen(runner_id)  # before the first look: no ring can be missed
        self.doorbell.wait(runner_id, 0)  # forget rings (a stale STOP) from before this claim
        while True:
            claimed = self._claim_where("", {"owner": runner_id})
            if claimed is not None:
                return claimed
            left = deadline - time.monotonic()
            if left <= 0 or STOP in self.doorbell.wait(runner_id, left):
                return None

    def claim_one_of(self, runner_id: str, invocation_ids: Sequence[str]) -> Invocation | None:
        ids = {f"id{n}": invocation_id for n, invocation_id in enumerate(invocation_ids)}
        if not ids:
            return None
        among = f"AND id IN ({', '.join(':' + name for name in ids)}) "
        return self._claim_where(among, {"owner": runner_id, **ids})

    def _claim_where(self, among: str, parameters: dict[str, Any]) -> Invocation | None:
        rows = self._execute(_claim_sql(among), {**parameters, "now": time.time()})
        return _invocation(rows[0]) if rows else None

    def complete_and_claim(self, invocation_id: str, runner_id: str,
                           result: bytes) -> Invocation | None:
        """One write transaction instead of two: the completion and the next claim."""
        sql, parameters = _change_sql(invocation_id, runner_id, Status.SUCCESS,
                                      {"result": result, "finished_at": time.time()})
        with self._transaction() as db:
            done = db.execute(sql, parameters).fetchall()
            claimed = db.execute(_claim_sql(""), {"owner": runner_id, "now": time.time()}
                                 ).fetchall() if done else []
            waiters = _take_waiters(db, [invocation_id] if done else [])
        self._announce(waiters)
        if not done:
            self._refused(invocation_id, runner_id, Status.SUCCESS)
        return _invocation(claimed[0]) if claimed else None

    def wakeup(self) -> None:
        self.doorbell.ring(STOP)

    def wait_any(self, invocation_ids: Sequence[str], timeout: float) -> None:
        """Blocks on a doorbell socket of this call's own, recorded as a waiter of each
        invocation in the transaction that checks none has ended: whichever transaction
        ends one afterwards rings it (see ``_take_waiters``)."""
        ids = sorted(set(invocation_ids))
        if not ids:
            time.sleep(timeout)
            return
        name = f"waiter-{os.getpid()}-{os.urandom(6).hex()}"
        marks = ", ".join("?" * len(ids))
        self.endings.listen(name)  # before it is recorded: no ring can be missed
        try:
            with self._transaction() as db:
                known, ended = db.execute(
                    f"SELECT COUNT(*), COUNT(*) FILTER (WHERE status IN {ENDED}) "
                    f"FROM invocations WHERE id IN ({marks})", ids).fetchone()
                if ended or known < len(ids):
                    return
                db.executemany("INSERT INTO waiters (invocation_id, waiter) VALUES (?, ?)",
                               [(i, name) for i in ids])
            try:
                self.endings.wait(name, timeout)
            finally:
                self._execute(f"DELETE FROM waiters WHERE invocation_id IN ({marks}) "
                              f"AND waiter = ?", (*ids, name))
        finally:
            self.endings.release(name)

    def _announce(self, waiters: Waiters) -> None:
        """Ring the waiters a committed transaction took (``_take_waiters``)."""
        if waiters:
            self.endings.ring_each(waiters)

    # -- asyncio (see pprunner_plugins._sqlite_endings) ----------------------------------

    def watch_endings(self, loop: asyncio.AbstractEventLoop) -> EndingsWatcher:
        """The loop reads one doorbell socket of its own for all its waiters."""
        from ._sqlite_endings import SQLiteEndingsWatcher

        return SQLiteEndingsWatcher(self, loop)

    async def enqueue_async(self, invocation: Invocation) -> None:
        """On the loop's thread: a local commit is shorter than a hand-over to a thread."""
        self.enqueue(invocation)

    def record_waiter(self, waiter: str, invocation_ids: Sequence[str]) -> list[Invocation]:
        """Register ``waiter`` for those of ``invocation_ids`` that have not ended, in
        the transaction that reads them; returns those that have ended (and raises
        UnknownInvocation for an id that is not stored)."""
        found: dict[str, Invocation] = {}
        with self._transaction() as db:
            for chunk in _chunks(invocation_ids):
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {COLUMNS} FROM invocations WHERE id IN ({marks})"
                for row in db.execute(sql, chunk):
                    invocation = _invocation(row)
                    found[invocation.id] = invocation
            unknown = [i for i in invocation_ids if i not in found]
            if unknown:
                raise missing(unknown[0])
            db.executemany("INSERT OR IGNORE INTO waiters (invocation_id, waiter) VALUES (?, ?)",
                           [(i, waiter) for i, invocation in found.items()
                            if not invocation.status.is_final])
        return [invocation for invocation in found.values() if invocation.status.is_final]

    def ended_among(self, invocation_ids: Sequence[str]) -> list[Invocation]:
        """Those of ``invocation_ids`` that have ended."""
        ended = []
        for chunk in _chunks(invocation_ids):
            marks = ", ".join("?" * len(chunk))
            ended += [_invocation(row) for row in self._execute(
                f"SELECT {COLUMNS} FROM invocations WHERE id IN ({marks}) AND status IN {ENDED}",
                chunk)]
        return ended

    def ids_ended_since(self, since: float) -> list[str]:
        """The ids of every invocation that ended with ``finished_at`` at or after
        ``since``: a range read of the index of endings, proportional to what ended
        since, whoever waits for it."""
        return [invocation_id for (invocation_id,) in self._execute(
            f"SELECT id FROM invocations INDEXED BY invocations_finished "
            f"WHERE status IN {ENDED} AND finished_at >= ?", (since,))]

    def forget_waiter(self, waiter: str, invocation_ids: Sequence[str] | None = None) -> None:
        """Remove ``waiter``'s registrations (for ``invocation_ids``, or all of them)."""
        if invocation_ids is None:
            self._execute("DELETE FROM waiters WHERE waiter = ?", (waiter,))
            return
        for chunk in _chunks(invocation_ids):
            marks = ", ".join("?" * len(chunk))
            self._execute(f"DELETE FROM waiters WHERE invocation_id IN ({marks}) "
                          f"AND waiter = ?", (*chunk, waiter))

    def _change(self, invocation_id: str, runner_id: str, new: Status, **values: Any) -> None:
        """An owner-only status change as one guarded UPDATE (and, when it ends the
        invocation, taking its waiters in the same transaction)."""
        sql, parameters = _change_sql(invocation_id, runner_id, new, values)
        if not new.is_final:
            done = self._execute(sql, parameters)
        else:
            with self._transaction() as db:
                done = db.execute(sql, parameters).fetchall()
                waiters = _take_waiters(db, [invocation_id] if done else [])
            self._announce(waiters)
        if not done:
            self._refused(invocation_id, runner_id, new)

    def _refused(self, invocation_id: str, runner_id: str, new: Status) -> None:
        """Raise why a guarded change matched no row."""
        check_owner_change(self.get(invocation_id), runner_id, new)
        raise IllegalTransition(f"invocation {invocation_id} changed while becoming {new}")

    def complete(self, invocation_id: str, runner_id: str, result: bytes) -> None:
        self._change(invocation_id, runner_id, Status.SUCCESS, result=result,
                     finished_at=time.time())

    def fail(self, invocation_id: str, runner_id: str, error: ErrorInfo) -> None:
        self._change(invocation_id, runner_id, Status.FAILED, error=error.to_json(),
                     finished_at=time.time())

    def retry(self, invocation_id: str, runner_id: str, error: ErrorInfo,
              not_before: float) -> None:
        self._change(invocation_id, runner_id, Status.PENDING, owner=None,
                     error=error.to_json(), not_before=not_before, started_at=None)
        self.doorbell.ring()

    def requeue(self, invocation_ids: Iterable[str] | None) -> list[Invocation]:
        with self._transaction() as db:
            if invocation_ids is None:
                rows = db.execute(f"SELECT {COLUMNS} FROM invocations WHERE status = "
                                  "'FAILED' ORDER BY seq").fetchall()
            else:
                ids = list(invocation_ids)
                rows = db.execute(f"SELECT {COLUMNS} FROM invocations WHERE status = 'FAILED' "
                                  f"AND id IN ({', '.join('?' * len(ids))}) ORDER BY seq",
                                  ids).fetchall()
            after = [requeued(_invocation(row)) for row in rows]
            db.executemany("UPDATE invocations SET status = ?, owner = NULL, attempts = 0, "
                           "started_at = NULL, finished_at = NULL, not_before = NULL "
                           "WHERE id = ?", [(i.status.value, i.id) for i in after])
        if after:
            self.doorbell.ring()
        return after

    def purge(self, finished_before: float, limit: int) -> int:
        """Named index: left to itself the planner takes the status index and sorts
        every finished row to find the oldest few."""
        return len(self._execute(
            f"DELETE FROM invocations WHERE seq IN (SELECT seq FROM invocations INDEXED BY "
            f"invocations_finished WHERE status IN {ENDED} AND finished_at < ? "
            f"ORDER BY finished_at LIMIT ?) RETURNING seq", (finished_before, limit)))

    def pause(self, invocation_id: str, runner_id: str,
              waiting_for: Sequence[str] = ()) -> None:
        self._change(invocation_id, runner_id, Status.PAUSED,
                     waiting_for=json.dumps(list(waiting_for)))

    def resume(self, invocation_id: str, runner_id: str) -> None:
        self._change(invocation_id, runner_id, Status.RUNNING, waiting_for="[]")

    # -- the supervisor and recovery ---------------------------------------------------

    def reroute(self, runner_id: str, error: ErrorInfo | None, *,
                retry: bool = True) -> list[Invocation]:
        with self._transaction() as db:
            after, waiters = self._reroute_in(db, runner_id, error, retry)
        self._announce(waiters)
        if any(i.status is Status.PENDING for i in after):
            self.doorbell.ring()
        return after

    def _reroute_in(self, db: sqlite3.Connection, runner_id: str, error: ErrorInfo | None,
                    retry: bool) -> tuple[list[Invocation], Waiters]:
        """The reroute's writes; (the invocations after it, the waiters of those it ended)."""
        owned = [_invocation(row) for row in db.execute(
            f"SELECT {COLUMNS} FROM invocations WHERE owner = ? AND status IN "
            f"{_in(OWNED_STATUSES)}", (runner_id,))]
        after = [rerouted(invocation, error, time.time(), retry) for invocation in owned]
        db.executemany(
            "UPDATE invocations SET status = ?, owner = ?, attempts = ?, started_at = ?, "
            "finished_at = ?, error = ?, history = ? WHERE id = ?",
            [(i.status.value, i.owner, i.attempts, i.started_at, i.finished_at,
              i.error.to_json() if i.error else None, _history(i), i.id) for i in after])
        return after, _take_waiters(db, [i.id for i in after if i.status.is_final])

    def recover(self, runner_id: str, older_than: float,
                error: ErrorInfo) -> list[Invocation] | None:
        with self._transaction() as db:
            stale = db.execute("SELECT 1 FROM runners WHERE id = ? AND heartbeat_at < ?",
                               (runner_id, time.time() - older_than)).fetchone()
            if stale is None:
                return None  # fresh again, or another recoverer was first
            db.execute("DELETE FROM runners WHERE id = ?", (runner_id,))
            after, waiters = self._reroute_in(db, runner_id, error, True)
        self._announce(waiters)
        if any(i.status is Status.PENDING for i in after):
            self.doorbell.ring()
        return after

    def owned_by(self, runner_ids: Iterable[str]) -> list[Invocation]:
        ids = list(runner_ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        return [_invocation(row) for row in self._execute(
            f"SELECT {COLUMNS} FROM invocations WHERE owner IN ({marks}) "
            f"AND status IN {_in(OWNED_STATUSES)} ORDER BY seq", ids)]

    def record_heartbeats(self, runners: Sequence[RunnerInfo], at: float) -> None:
        with self._db() as db:
            self._retrying(lambda: db.executemany(
                "INSERT INTO runners (id, kind, pid, host, supervisor, slot, started_at, "
                "heartbeat_at, phase) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO "
                "UPDATE SET heartbeat_at = excluded.heartbeat_at, pid = excluded.pid, "
                "phase = excluded.phase",
                [(r.id, r.kind.value, r.pid, r.host, r.supervisor, r.slot, r.started_at, at,
                  r.phase) for r in runners]))

    def forget_runners(self, runner_ids: Iterable[str]) -> None:
        ids = list(runner_ids)
        with self._db() as db:
            self._retrying(lambda: db.executemany("DELETE FROM runners WHERE id = ?",
                                                  [(r,) for r in ids]))
        self.doorbell.forget(ids)

    def runners(self) -> list[RunnerInfo]:
        return self._runners("")

    def stale_runners(self, older_than: float) -> list[RunnerInfo]:
        return self._runners("WHERE heartbeat_at < ?", time.time() - older_than)

    def _runners(self, where: str, *params: Any) -> list[RunnerInfo]:
        return [RunnerInfo(id=id_, kind=RunnerKind(kind), pid=pid, host=host,
                           supervisor=supervisor, slot=slot, started_at=started_at,
                           heartbeat_at=heartbeat_at, phase=phase)
                for id_, kind, pid, host, supervisor, slot, started_at, heartbeat_at, phase
                in self._execute("SELECT id, kind, pid, host, supervisor, slot, started_at, "
                                 f"heartbeat_at, phase FROM runners {where} ORDER BY started_at",
                                 params)]

    # -- inspection ------------------------------------------------------------------

    def get(self, invocation_id: str) -> Invocation:
        rows = self._execute(f"SELECT {COLUMNS} FROM invocations WHERE id = ?", (invocation_id,))
        if not rows:
            raise missing(invocation_id)
        return _invocation(rows[0])

    def invocations(self, status: Status, limit: int) -> list[Invocation]:
        return [_invocation(row) for row in self._execute(
            f"SELECT {COLUMNS} FROM invocations WHERE status = ? ORDER BY seq DESC LIMIT ?",
            (status.value, limit))]

    def ended_since(self, since: float) -> dict[Status, int]:
        """Two range reads of the covering index (status, finished_at); the condition
        repeats the partial index's own, the only form SQLite matches it by."""
        ended = ended_template()
        for status, number in self._execute(
                f"SELECT status, COUNT(*) FROM invocations INDEXED BY invocations_ended "
                f"WHERE status IN {ENDED} AND finished_at >= ? GROUP BY status", (since,)):
            ended[Status(status)] = number
        return ended

    def latest_failures(self, limit: int) -> list[Invocation]:
        return [_invocation(row) for row in self._execute(
            f"SELECT {COLUMNS} FROM invocations INDEXED BY invocations_ended "
            f"WHERE status IN {ENDED} AND status = 'FAILED' ORDER BY finished_at DESC LIMIT ?",
            (limit,))]

    def counts(self) -> dict[Status, int]:
        counts = counts_template()
        for status, number in self._execute(
                "SELECT status, COUNT(*) FROM invocations GROUP BY status"):
            counts[Status(status)] = number
        return counts

    def close(self) -> None:
        self.doorbell.close()
        self.endings.close()
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


@pprunner.hookimpl
def pprunner_register_backends(register: Callable[..., None]) -> None:
    register("sqlite", SQLiteBackend)
