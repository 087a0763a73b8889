"""The ``postgresql://`` backend: many supervisors on many hosts share one PostgreSQL.

``postgresql://user:password@host:5432/db?schema=NAME&batch=N`` (``postgres://``
too; any other query parameter is libpq's, ``sslmode`` say). Needs psycopg 3 (``pip
install 'pprunner[postgres]'``). ``schema`` (default ``pprunner``) is the PostgreSQL
schema that holds the app's tables, made on first use and migrated when pprunner's
tables change (:mod:`.schema`), so several apps share one database without sharing a
queue. ``batch`` (default 1) lets a worker claim up to N invocations at once and write
their completions together, an opt-in trade (:mod:`pprunner.batching`).

A claim is one ``UPDATE`` of the oldest due PENDING row that a subquery picks
``FOR UPDATE SKIP LOCKED``: claimers never wait for each other's rows, and a
row is never claimed twice. Every owner-only change is one ``UPDATE`` guarded
by the owner and the statuses the transition table allows, so a late
completion from a runner that lost its invocation matches no row and is
refused; a worker's completion and its next claim are one statement, whose commit
does not wait for the disk (an enqueue's does: see :data:`WITHOUT_FLUSH`). Reroute
and recovery use the core's one rule (:func:`pprunner.backend.rerouted`) on
rows locked ``FOR UPDATE``; the recovery deletes the lost runner's row first,
so of several supervisors that try at once exactly one succeeds.

An idle claimer blocks on a connection that ``LISTEN``\\s on the schema's channel,
and an enqueue (or a reroute, a retry, a requeue) sends ``NOTIFY`` in its own
transaction: the claimer starts within a round trip. A new listener notifies
itself (:data:`HEARD`): until it has heard that, it looks at the queue again every
:data:`POLL_FALLBACK` seconds, so a notification that never came (a pooler in
transaction mode that does not pass ``LISTEN`` on) costs that much latency, never a
task. Once it has, an idle claimer sends nothing while it waits: it looks again
when notified, when a listener reconnects, when the next retry is due, and at
least every :data:`QUIET_FALLBACK` seconds (for rows no one announced).

Heartbeats are kept on the server's clock (``clock_timestamp()``), so hosts whose
clocks disagree still judge staleness alike. Once connected, a server that
restarts or drops connections (``pg_terminate_backend``) is waited for as the
Redis backend waits: each operation is sent again at once, then retried with a
growing pause; a resend that finds its first send done (a reply lost with its
connection) takes that as its answer, so a claim whose reply was lost is not
left RUNNING for nobody. A server that cannot be reached at start is an error at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

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
from pprunner.batching import Batch, Finished, batch_limit, log_refused
from pprunner.errors import BackendError, ConfigError, IllegalTransition
from pprunner.invocation import (
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
from pprunner.plugins import install_extra
from pprunner_plugins.sqlite import COLUMNS, _history, _invocation

from .schema import ENDED, ENDING_LOCK, OWNED, SCHEMA_VERSION, in_list, steps_after

logger = logging.getLogger("pprunner.postgres")
T = TypeVar("T")

#: the longest an idle claim waits for a notification before it looks at the queue
#: again while its listener has not heard itself (a pooler in transaction mode may
#: not pass notifications on): the latency a lost notification costs there
POLL_FALLBACK = 1.0
#: the same, once the listener has heard its own notification: notifications reach
#: it, and every change that makes work claimable sends one, so this only bounds
#: what nothing announced (a row written by hand, a claim that died holding a row)
QUIET_FALLBACK = 10.0
#: the payload a new listener sends itself, to learn whether notifications reach it
HEARD = "heard"
RETRY_PAUSE_MAX = 5.0
#: what an idle claimer is sent by :meth:`PostgresBackend.wakeup` (new work sends "")
STOP = "stop"
#: a condition that holds, evaluated on a row a claim or a completion writes: this
#: transaction's commit does not wait for its WAL to reach the disk, so a worker never
#: waits for a flush (an enqueue still does: it is the only copy of a task). What a
#: server crash (not a clean restart, which flushes) may lose is the worker's last claims and
#: completions: a lost claim leaves its invocation PENDING, and it runs again; a lost
#: completion leaves it RUNNING, owned by a worker that moved on, and that worker hands
#: it back at its next idle claim after the outage (:meth:`PostgresBackend._hand_back_lost`),
#: so it runs again: inside the at-least-once window, as after a worker's death.
WITHOUT_FLUSH = "set_config('synchronous_commit', 'off', true) IS NOT NULL"
#: the server's clock, in seconds since the epoch, as heartbeats are written and judged
SERVER_NOW = "extract(epoch FROM clock_timestamp())::float8"
#: libpq settings unless the URL says otherwise: a server that does not answer within
#: 5 s is unreachable, and a connection whose packets go unacknowledged for 10 s (a
#: host cut off) is dropped rather than waited on for the kernel's minutes
CONNECT_DEFAULTS = {"connect_timeout": "5", "tcp_user_timeout": "10000"}
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


class Location(NamedTuple):
    """What a ``postgresql://`` URL says: where to connect, and pprunner's own parameters."""

    #: the URL libpq understands (pprunner's parameters taken out)
    conninfo: str
    schema: str
    #: the most invocations a worker claims at once (:mod:`pprunner.batching`); 1: one at a time
    batch: int


def split_url(url: str) -> Location:
    """The URL libpq understands, and the ``schema`` and ``batch`` parameters it held."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    schema = query.pop("schema", "pprunner")
    if not SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(f"bad schema {schema!r} in {url!r}: a lower-case name of letters, "
                          "digits and _, at most 41 characters")
    batch = batch_limit(query.pop("batch", "1"), url)
    query = {**CONNECT_DEFAULTS, **query}
    # quote, not quote_plus: libpq reads %20 as a space but not +
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return Location(urllib.parse.urlunsplit(parts._replace(scheme="postgresql", query=encoded)),
                    schema, batch)


def _row_values(invocation: Invocation) -> tuple[Any, ...]:
    """An invocation as the values of :data:`COLUMNS`."""
    i = invocation
    return (i.id, i.task, i.serializer, i.payload, i.status.value, i.owner, i.attempts,
            i.max_attempts, i.enqueued_at, i.started_at, i.finished_at, i.result,
            i.error.to_json() if i.error else None, i.not_before, _history(i),
            json.dumps(list(i.waiting_for)), json.dumps(i.headers) if i.headers else None)


class PostgresBackend(Pausing, Admin, Recovery):
    notifies_final = True
    retry_pause_max = RETRY_PAUSE_MAX

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError:
            raise BackendError(f"the postgres backend needs psycopg 3: "
                               f"{install_extra('postgres')}") from None
        self._psycopg = psycopg
        self._conninfo, self.schema, self.batch = split_url(url)
        #: the channel an idle claimer listens on
        self.channel = f"pprunner_{self.schema}"
        #: the channel a caller of wait_any listens on (see ``schema.announce_ending``)
        self.endings_channel = f"pprunner_{self.schema}_ended"
        self._table = f'"{self.schema}".invocations'
        self._runners_table = f'"{self.schema}".runners'
        #: connections not in use now; popping and appending a list is atomic
        self._spare: list[Any] = []
        #: per runner: its connection that LISTENs, while it claims
        self._listeners: dict[str, Any] = {}
        #: connections a forked child inherited: never used nor closed by the child
        #: (that would end the parent's sessions), only kept from the garbage collector
        self._inherited: list[Any] = []
        #: whether the server was ever reached: until then, failing to reach it is an
        #: error at once rather than an outage to wait out
        self._connected = False
        self._schema_ready = False
        self._pid = os.getpid()
        #: per runner claiming here: what it claimed ahead and finished unwritten
        self._batches: dict[str, Batch] = {}
        #: connections lost so far (see :meth:`_hand_back_lost`), and per runner how many
        #: had been lost when it last handed back what the server may have lost for it
        self._outages = 0
        self._outages_seen: dict[str, int] = {}
        #: per runner: when (``time.monotonic()``) its idle claim looks at the queue
        #: next unless notified first; a runner not here looks at once
        self._look_at: dict[str, float] = {}
        #: runners whose listener has heard its own notification
        self._heard: set[str] = set()

    # -- connections and outages ---------------------------------------------------------

    def _connect(self) -> Any:
        """A new connection in autocommit mode; the first one also readies the schema.

        Once the server has been reached, a connection lost while the schema is
        readied (a restart, ``pg_terminate_backend``) is an outage, waited out."""
        connection = self._psycopg.connect(self._conninfo, autocommit=True)
        self._connected = True
        if not self._schema_ready:
            try:
                self._ready_schema(connection)
            except BaseException:
                connection.close()
                raise
            self._schema_ready = True
        return connection

    def _ready_schema(self, connection: Any) -> None:
        """Make the schema and its tables, or bring older tables up to date (see
        :mod:`.schema`); a command that only reads refuses a schema that is not there."""
        quoted = f'"{self.schema}"'
        if not self.create and connection.execute(
                "SELECT to_regclass(%s) IS NULL", (self._table,)).fetchone()[0]:
            raise ConfigError(f"no pprunner tables in schema {self.schema!r} of {self._shown()}"
                              "; check the URL: this command does not create them")
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"pprunner schema {self.schema}",))
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            connection.execute(f"CREATE TABLE IF NOT EXISTS {quoted}.schema_version "
                               "(version INTEGER NOT NULL)")
            row = connection.execute(f"SELECT version FROM {quoted}.schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise BackendError(f"schema {self.schema!r} of {self._shown()} is at version "
                                   f"{version}, newer than this pprunner's {SCHEMA_VERSION}; "
                                   "upgrade pprunner")
            for statement in steps_after(version):
                connection.execute(statement.format(s=quoted))
            if row is None:
                connection.execute(f"INSERT INTO {quoted}.schema_version VALUES (%s)",
                                   (SCHEMA_VERSION,))
            elif version < SCHEMA_VERSION:
                connection.execute(f"UPDATE {quoted}.schema_version SET version = %s",
                                   (SCHEMA_VERSION,))
                logger.info("migrated schema %s from version %d to %d", self.schema, version,
                            SCHEMA_VERSION)

    def _shown(self) -> str:
        """The URL without its password, for messages."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=host))

    def _after_fork(self) -> None:
        """A forked child must not share the parent's sockets: it opens its own."""
        if self._pid != os.getpid():
            self._inherited += [*self._spare, *self._listeners.values()]
            self._spare, self._listeners, self._batches = [], {}, {}
            self._look_at, self._heard = {}, set()
            self._pid = os.getpid()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A spare connection (or a new one) for one operation; closed if it failed
        midway, since its state is then unknown."""
        self._after_fork()
        try:
            connection = self._spare.pop()
        except IndexError:
            connection = self._connect()
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        self._spare.append(connection)

    def _run(self, operation: Callable[[Any, bool], T]) -> T:
        """``operation(connection, resent)`` on a pooled connection, retried while the
        server is away (see :meth:`_retrying`)."""
        def on_a_connection(resent: bool) -> T:
            with self._connection() as connection:
                return operation(connection, resent)

        return self._retrying(on_a_connection)

    def _retrying(self, operation: Callable[[bool], T]) -> T:
        """Run ``operation(resent)``; while the server is unreachable, wait for it.

        ``resent`` tells the operation its earlier send may have been carried out
        and only its reply lost. The first resend goes at once and says nothing:
        a connection the server closed while it sat unused is no outage.
        """
        pause, outage, failures = 0.1, 0.0, 0
        while True:
            try:
                result = operation(failures > 0)
            except self._psycopg.OperationalError as exc:
                if not self._connected:
                    raise BackendError(f"cannot reach PostgreSQL at {self._shown()}: "
                                       f"{str(exc).strip()}") from None
                self._outages += 1
                failures += 1
                if failures == 1:
                    continue
                if not outage:
                    outage = time.monotonic()
                    logger.warning("PostgreSQL at %s is unreachable (%s); retrying",
                                   self._shown(), str(exc).strip())
                lasted = time.monotonic() - outage
                if not self.keep_waiting(lasted):
                    raise BackendError(f"PostgreSQL at {self._shown()} has been unreachable "
                                       f"for {lasted:.0f} s; stopped waiting for it") from None
                time.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX)
                continue
            except self._psycopg.Error as exc:
                raise BackendError(f"PostgreSQL at {self._shown()} refused an operation: "
                                   f"{str(exc).strip()}") from exc
            if outage:
                logger.warning("PostgreSQL at %s is back after %.1f s", self._shown(),
                               time.monotonic() - outage)
                self.outage_ended_at = time.time()
            return result

    def _rows(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """One statement's rows (retried whole: for reads and idempotent writes)."""
        return self._run(lambda db, _resent: db.execute(sql, parameters).fetchall())

    def _notify(self, db: Any, payload: str = "") -> None:
        """Tell idle claimers (sent when ``db``'s transaction commits)."""
        db.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    # -- producers and workers -------------------------------------------------------

    def enqueue(self, invocation: Invocation) -> None:
        """The row and the notification in one statement; a resend whose first send
        was stored finds its id there and adds nothing."""
        marks = ", ".join(["%s"] * len(_row_values(invocation)))

        def insert(db: Any, resent: bool) -> None:
            again = " ON CONFLICT (id) DO NOTHING" if resent else ""
            db.execute(f"WITH added AS (INSERT INTO {self._table} ({COLUMNS}) VALUES ({marks})"
                       f"{again} RETURNING 1) SELECT pg_notify(%s, '') FROM added",
                       (*_row_values(invocation), self.channel))

        self._run(insert)

    def _claim_ctes(self, among: str, condition: str, size: int) -> str:
        """The claim, as CTEs ending with ``claimed`` (RETURNING the columns and
        ``seq``): the ``size`` oldest due PENDING rows (``among`` narrows them),
        skipping rows other claimers have locked, where ``condition`` holds. Of
        several, the first is taken, and the others only if it and they have never
        been attempted and may be attempted again (see :mod:`pprunner.batching`).

        ``size`` is written into the statement, not passed: psycopg prepares a
        statement after five runs, and the server's generic plan for ``LIMIT $1``
        drained the default (``batch=1``) at 0.6x the speed in a side-by-side run.
        A claim of one keeps to the plainest form, 30 us a statement cheaper."""
        due = (f"{self._table} WHERE status = 'PENDING' {among}AND (not_before IS NULL OR "
               f"not_before <= %(now)s) ORDER BY seq")
        if size == 1:
            ctes, rows = "", f"= (SELECT seq FROM {due} LIMIT 1 FOR UPDATE SKIP LOCKED)"
        else:
            ctes = (f"picked AS (SELECT seq, attempts = 0 AND max_attempts > 1 AS batchable "
                    f"FROM {due} LIMIT {size:d} FOR UPDATE SKIP LOCKED), head AS (SELECT seq, "
                    "batchable FROM picked ORDER BY seq LIMIT 1), ")
            rows = ("IN (SELECT picked.seq FROM picked, head WHERE picked.seq = head.seq OR "
                    "(head.batchable AND picked.batchable))")
        return (f"{ctes}claimed AS (UPDATE {self._table} SET status = 'RUNNING', owner = "
                f"%(owner)s, attempts = attempts + 1, started_at = %(now)s WHERE seq {rows} "
                f"AND {condition} RETURNING {COLUMNS}, seq)")

    @staticmethod
    def _in_order(rows: Iterable[Sequence[Any]]) -> list[Invocation]:
        """Rows of the columns and ``seq`` as invocations, in queue order."""
        return [_invocation(tuple(row[:-1])) for row in sorted(rows, key=lambda row: row[-1])]

    def _claimed_before(self, db: Any, runner_id: str, now: float) -> list[Invocation]:
        """What a claim of ``runner_id`` at ``now`` took, when its reply was lost."""
        return self._in_order(db.execute(
            f"SELECT {COLUMNS}, seq FROM {self._table} WHERE owner = %s AND status = "
            "'RUNNING' AND started_at = %s", (runner_id, now)))

    def _batch(self, runner_id: str) -> Batch:
        """``runner_id``'s batch (made on its first claim here)."""
        self._after_fork()
        return self._batches.setdefault(runner_id, Batch(self.batch))

    def _claim_where(self, runner_id: str, among: str = "",
                     ids: Sequence[str] = ()) -> Invocation | None:
        now = time.time()
        batch = self._batch(runner_id)
        sql = (f"WITH {self._claim_ctes(among, WITHOUT_FLUSH, 1 if among else batch.size)}"
               " SELECT * FROM claimed")
        parameters = {"owner": runner_id, "now": now, "ids": list(ids)}

        def claim(db: Any, resent: bool) -> list[Invocation]:
            if resent and (before := self._claimed_before(db, runner_id, now)):
                return before
            return self._in_order(db.execute(sql, parameters))

        return batch.claimed(self._run_listening(runner_id, claim))

    def _run_listening(self, runner_id: str, operation: Callable[[Any, bool], T]) -> T:
        """:meth:`_run` on ``runner_id``'s listener, when it has one (a spare connection
        otherwise). The server process that has just delivered a notification is awake:
        a claim sent on its connection does not wait for another one to be scheduled
        (the claim's part of an idle worker's enqueue -> claim went from 0.56 to 0.49 ms
        p50 on a 2-core VM). What is notified while the claim runs is kept by psycopg
        for the next wait."""
        def on_the_listener(resent: bool) -> T:
            self._after_fork()
            listener = self._listeners.get(runner_id)
            if listener is None:
                with self._connection() as connection:
                    return operation(connection, resent)
            try:
                return operation(listener, resent)
            except BaseException:
                self._drop_listeners([runner_id])  # its state is unknown
                raise

        return self._retrying(on_the_listener)

    def claim(self, runner_id: str, timeout: float) -> Invocation | None:
        batch = self._batch(runner_id)
        ahead = batch.take()
        if ahead is not None:
            return ahead
        self._settle(runner_id)
        deadline = time.monotonic() + timeout
        if timeout > 0:  # listening before the first look: no notification can be missed
            self._wait_for_work(runner_id, 0)  # and what came before (a stale stop) is read
        else:
            self._look_at.pop(runner_id, None)  # no wait to read notifications in: look
        while True:
            self._hand_back_lost(runner_id)
            if time.monotonic() >= self._look_at.get(runner_id, 0.0):
                claimed = self._claim_where(runner_id)
                if claimed is not None:
                    return claimed
                batch.size = 1  # idle: what comes next may be slow, so batches start over
                self._quiet(runner_id)
            left = deadline - time.monotonic()
            wait = min(left, self._look_at.get(runner_id, 0.0) - time.monotonic())
            if left <= 0 or STOP in self._wait_for_work(runner_id, max(wait, 0.0)):
                return None

    def _quiet(self, runner_id: str) -> None:
        """``runner_id`` found nothing to claim: until a notification comes, it looks
        again only after :data:`POLL_FALLBACK`, or, once its listener has heard itself,
        when the next retry waiting for its time is due (within :data:`QUIET_FALLBACK`):
        an idle worker then sends nothing while it waits."""
        if runner_id not in self._listeners:
            return
        wait = POLL_FALLBACK
        if runner_id in self._heard:
            due = self._rows(f"SELECT min(not_before) FROM {self._table} WHERE status = "
                             "'PENDING' AND not_before > %s", (time.time(),))[0][0]
            wait = QUIET_FALLBACK if due is None else min(QUIET_FALLBACK, due - time.time())
        self._look_at[runner_id] = time.monotonic() + max(wait, 0.0)

    def _hand_back_lost(self, runner_id: str) -> None:
        """After a lost connection, what the store says ``runner_id`` holds as it claims
        (idle, it holds nothing) is what a server crash lost of its writes
        (:data:`WITHOUT_FLUSH`): handed back as never started, to run again."""
        outages = self._outages
        if self._outages_seen.setdefault(runner_id, outages) == outages:
            return

        def hand_back(db: Any, _resent: bool) -> list[Invocation]:
            with db.transaction():
                return self._reroute_in(db, runner_id, None, True)

        lost = self._run(hand_back)
        self._outages_seen[runner_id] = outages
        if lost:
            logger.warning("after losing its connection, runner %s still held %s, whose "
                           "completion the server lost; they run again", runner_id,
                           ", ".join(i.id for i in lost))

    def _listener(self, runner_id: str) -> Any:
        """``runner_id``'s connection that LISTENs on the channel (opened once)."""
        self._after_fork()
        listener = self._listeners.get(runner_id)
        if listener is None:
            listener = self._connect()
            try:
                listener.execute(f'LISTEN "{self.channel}"')
                listener.execute("SELECT pg_notify(%s, %s)", (self.channel, HEARD))
            except BaseException:
                listener.close()
                raise
            self._listeners[runner_id] = listener
            self._look_at.pop(runner_id, None)  # what was notified before is in the table
        return listener

    def _wait_for_work(self, runner_id: str, timeout: float) -> list[str]:
        """The notifications ``runner_id`` gets within ``timeout`` (returns at the first),
        on its listener, opened first if it has none (waiting out an outage).

        A listener that lost its connection is dropped, and the claim looks at the
        queue again: what was notified meanwhile is in the table. Any notification
        but a listener's :data:`HEARD` makes the claim look again; its own
        :data:`HEARD` tells that notifications reach it.
        """
        listener = self._retrying(lambda _resent: self._listener(runner_id))
        try:
            notes = list(listener.notifies(timeout=timeout, stop_after=1))
        except self._psycopg.OperationalError:
            self._outages += 1
            self._drop_listeners([runner_id])
            return []
        own = listener.info.backend_pid
        if any(n.payload == HEARD and n.pid == own for n in notes):
            self._heard.add(runner_id)
        payloads = [n.payload for n in notes if n.payload != HEARD]
        if payloads:
            self._look_at.pop(runner_id, None)
        return payloads

    def _drop_listeners(self, runner_ids: Iterable[str]) -> None:
        for runner_id in runner_ids:
            self._look_at.pop(runner_id, None)
            self._heard.discard(runner_id)
            listener = self._listeners.pop(runner_id, None)
            if listener is not None:
                listener.close()

    def claim_one_of(self, runner_id: str, invocation_ids: Sequence[str]) -> Invocation | None:
        if not invocation_ids:
            return None
        return self._claim_where(runner_id, "AND id = ANY(%(ids)s) ", invocation_ids)

    def wakeup(self) -> None:
        self._run(lambda db, _resent: self._notify(db, STOP))

    def wait_any(self, invocation_ids: Sequence[str], timeout: float) -> None:
        """Blocks on a connection that LISTENs for endings, registered as a waiter of
        each invocation in the transaction that checks, holding a lock that an ending
        takes too (``schema.ENDING_LOCK``), that none has ended: the trigger of an
        ending after that tells the waiter (see ``schema``)."""
        ids = sorted(set(invocation_ids))
        token = os.urandom(8).hex()
        deadline = time.monotonic() + timeout

        def registered(db: Any) -> bool:
            with db.transaction():
                db.execute(f'LISTEN "{self.endings_channel}"')
                db.execute(f"SELECT pg_advisory_xact_lock_shared({ENDING_LOCK}, hashtext(id)) "
                           "FROM unnest(%s::text[]) AS id", (ids,))
                statuses = [Status(status) for (status,) in db.execute(
                    f"SELECT status FROM {self._table} WHERE id = ANY(%s)", (ids,))]
                if len(statuses) < len(ids) or any(s.is_final for s in statuses):
                    return False
                db.cursor().executemany(
                    f'INSERT INTO "{self.schema}".waiters (invocation_id, waiter) VALUES (%s, %s)',
                    [(i, token) for i in ids])
            return True

        def wait(db: Any, _resent: bool) -> None:
            """Registered, until told or out of time; a lost connection is retried
            whole, with the time left."""
            try:
                if registered(db):
                    while (left := deadline - time.monotonic()) > 0 and token not in (
                            n.payload for n in db.notifies(timeout=left, stop_after=1)):
                        pass
            finally:
                db.execute(f'UNLISTEN "{self.endings_channel}"')
                db.execute(f'DELETE FROM "{self.schema}".waiters WHERE waiter = %s', (token,))

        self._run(wait)

    def complete_and_claim(self, invocation_id: str, runner_id: str,
                           result: bytes) -> Invocation | None:
        """The completion and the next claim in one statement, one round trip; with
        ``batch``, the next invocation claimed ahead instead while there is one, and
        then every completion kept meanwhile written with the next claim."""
        batch = self._batch(runner_id)
        ahead = batch.finish_and_take(invocation_id, result, lambda: self._give_back(runner_id))
        if ahead is not None:
            return ahead
        finished = batch.written()
        now = time.time()
        claim = self._claim_ctes("", "EXISTS (SELECT 1 FROM done WHERE id = %(id)s)",
                                 batch.size)
        sql = (f"WITH {self._done_cte(finished)}, {claim} SELECT (SELECT array_agg(id) FROM done), "
               "claimed.* FROM (SELECT) AS one LEFT JOIN claimed ON true")
        parameters = {**self._done_parameters(runner_id, finished), "id": invocation_id,
                      "now": now}

        def complete_and_claim(db: Any, resent: bool) -> tuple[set[str], list[Invocation]]:
            rows = db.execute(sql, parameters).fetchall()
            done = set(rows[0][0] or ())
            if invocation_id not in done:
                return done, self._claimed_before(db, runner_id, now) if resent else []
            return done, self._in_order(row[1:] for row in rows if row[1] is not None)

        (done, claimed), resent = self._run_noting_resends(complete_and_claim)
        if runner_id in self._listeners:
            # read what a busy runner was sent meanwhile: a listener that is never read
            # fills its socket, and the server keeps every notification queued for it
            self._wait_for_work(runner_id, 0)
        self._log_refused(finished[:-1], done, runner_id, resent)
        if invocation_id not in done:
            self._refused(invocation_id, runner_id, Status.SUCCESS, resent)
        return batch.claimed(claimed)

    def _done_cte(self, finished: Sequence[Finished]) -> str:
        """The CTE ``done``: the completions ``finished``, each guarded by the owner and
        the statuses a completion may come from (RETURNING their ids). Their values
        are a ``VALUES`` list (see :meth:`_done_parameters`): joined with arrays
        (``unnest``), a completion cost 100 us more."""
        allowed = in_list(sources_of(Status.SUCCESS) & OWNED_STATUSES)
        values = ", ".join(f"(%(id{n})s::text, %(result{n})s::bytea, %(start{n})s::float8, "
                           f"%(end{n})s::float8)" for n in range(len(finished)))
        return (f"done AS (UPDATE {self._table} AS t SET status = 'SUCCESS', result = "
                "f.result, started_at = coalesce(f.started_at, t.started_at), finished_at = "
                f"f.finished_at FROM (VALUES {values}) AS f(id, result, started_at, "
                f"finished_at) WHERE t.id = f.id AND t.owner = %(owner)s AND t.status IN "
                f"{allowed} AND {WITHOUT_FLUSH} RETURNING t.id)")

    @staticmethod
    def _done_parameters(runner_id: str, finished: Sequence[Finished]) -> dict[str, Any]:
        parameters: dict[str, Any] = {"owner": runner_id}
        for n, f in enumerate(finished):
            parameters.update({f"id{n}": f.invocation_id, f"result{n}": f.result,
                               f"start{n}": f.started_at, f"end{n}": f.finished_at})
        return parameters

    def _log_refused(self, finished: Sequence[Finished], done: set[str], runner_id: str,
                     resent: bool) -> None:
        """(see :func:`pprunner.batching.log_refused`)"""
        log_refused(finished, done, lambda i: self._refused(i, runner_id, Status.SUCCESS, resent))

    def _settle(self, runner_id: str, *, give_back: bool = False) -> None:
        """Write ``runner_id``'s completions kept for its batch; with ``give_back``, then
        return what it claimed ahead to the queue (:meth:`_give_back`)."""
        batch = self._batches.get(runner_id)
        finished = [] if batch is None else batch.written()
        if finished:
            sql = f"WITH {self._done_cte(finished)} SELECT array_agg(id) FROM done"
            parameters = self._done_parameters(runner_id, finished)
            done, resent = self._run_noting_resends(
                lambda db, _resent: set(db.execute(sql, parameters).fetchone()[0] or ()))
            self._log_refused(finished, done, runner_id, resent)
        if give_back:
            self._give_back(runner_id)

    def _give_back(self, runner_id: str) -> None:
        """Return what ``runner_id`` claimed ahead to the queue as never started (its
        attempt taken back), and tell idle claimers."""
        batch = self._batches.get(runner_id)
        ahead = [] if batch is None else batch.given_back()
        if not ahead:
            return

        def give_back(db: Any, _resent: bool) -> None:
            with db.transaction():
                db.execute(f"UPDATE {self._table} SET status = 'PENDING', owner = NULL, "
                           "attempts = attempts - 1, started_at = NULL WHERE id = ANY(%s) "
                           "AND owner = %s AND status = 'RUNNING'", (ahead, runner_id))
                self._notify(db)

        self._run(give_back)

    def _run_noting_resends(self, operation: Callable[[Any, bool], T]) -> tuple[T, bool]:
        """:meth:`_run`, and whether the operation had to be sent again."""
        sends: list[bool] = []

        def noted(db: Any, resent: bool) -> T:
            sends.append(resent)
            return operation(db, resent)

        return self._run(noted), sends[-1]

    def _change_sql(self, invocation_id: str, runner_id: str, new: Status,
                    values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """An owner-only change as one guarded UPDATE (RETURNING id): it matches no row
        when refused."""
        sets = "".join(f", {column} = %(set_{column})s" for column in values)
        if "error" in values:  # every failed attempt's error joins the history
            sets += (", history = (history::jsonb || jsonb_build_array("
                     "%(set_error)s::text::jsonb))::text")
        allowed = in_list(sources_of(new) & OWNED_STATUSES)
        if new is Status.SUCCESS:
            allowed += f" AND {WITHOUT_FLUSH}"
        return (f"UPDATE {self._table} SET status = %(new)s{sets} WHERE id = %(id)s AND "
                f"owner = %(owner)s AND status IN {allowed} RETURNING id",
                {"new": new.value, "id": invocation_id, "owner": runner_id,
                 **{f"set_{column}": value for column, value in values.items()}})

    def _change(self, invocation_id: str, runner_id: str, new: Status, *,
                notify: bool = False, **values: Any) -> None:
        """One owner-only status change (and a notification with it when ``notify``)."""
        self._settle(runner_id, give_back=new is Status.PAUSED)
        sql, parameters = self._change_sql(invocation_id, runner_id, new, values)

        def change(db: Any, _resent: bool) -> bool:
            with db.transaction():
                done = db.execute(sql, parameters).fetchone() is not None
                if done and notify:
                    self._notify(db)
            return done

        done, resent = self._run_noting_resends(change)
        if not done:
            self._refused(invocation_id, runner_id, new, resent)

    def _refused(self, invocation_id: str, runner_id: str, new: Status, resent: bool) -> None:
        """Raise why a change was refused, unless it was our own whose reply was lost."""
        current = self.get(invocation_id)
        if resent and current.status is new and current.owner in (runner_id, None):
            return
        check_owner_change(current, runner_id, new)
        raise IllegalTransition(f"invocation {invocation_id} changed while becoming {new}")

    def complete(self, invocation_id: str, runner_id: str, result: bytes) -> None:
        self._change(invocation_id, runner_id, Status.SUCCESS, result=result,
                     finished_at=time.time())

    def fail(self, invocation_id: str, runner_id: str, error: ErrorInfo) -> None:
        self._change(invocation_id, runner_id, Status.FAILED, error=error.to_json(),
                     finished_at=time.time())

    def retry(self, invocation_id: str, runner_id: str, error: ErrorInfo,
              not_before: float) -> None:
        self._change(invocation_id, runner_id, Status.PENDING, notify=True, owner=None,
                     error=error.to_json(), not_before=not_before, started_at=None)

    def pause(self, invocation_id: str, runner_id: str,
              waiting_for: Sequence[str] = ()) -> None:
        self._change(invocation_id, runner_id, Status.PAUSED,
                     waiting_for=json.dumps(list(waiting_for)))

    def resume(self, invocation_id: str, runner_id: str) -> None:
        self._change(invocation_id, runner_id, Status.RUNNING, waiting_for="[]")

    # -- the supervisor and recovery ---------------------------------------------------

    def reroute(self, runner_id: str, error: ErrorInfo | None, *,
                retry: bool = True) -> list[Invocation]:
        self._settle(runner_id)  # (claimed ahead: rerouted below, as never started)
        self._batches.pop(runner_id, None)

        def reroute(db: Any, _resent: bool) -> list[Invocation]:
            with db.transaction():
                return self._reroute_in(db, runner_id, error, retry)

        return self._run(reroute)

    def recover(self, runner_id: str, older_than: float,
                error: ErrorInfo) -> list[Invocation] | None:
        def recover(db: Any, _resent: bool) -> list[Invocation] | None:
            with db.transaction():
                gone = db.execute(f"DELETE FROM {self._runners_table} WHERE id = %s AND "
                                  f"heartbeat_at < {SERVER_NOW} - %s RETURNING id",
                                  (runner_id, older_than)).fetchone()
                if gone is None:
                    return None  # fresh again, or another recoverer was first
                return self._reroute_in(db, runner_id, error, True)

        return self._run(recover)

    def _reroute_in(self, db: Any, runner_id: str, error: ErrorInfo | None,
                    retry: bool) -> list[Invocation]:
        """The reroute's writes, inside the caller's transaction; the invocations after it."""
        owned = [_invocation(row) for row in db.execute(
            f"SELECT {COLUMNS} FROM {self._table} WHERE owner = %s AND status IN "
            f"{OWNED} ORDER BY seq FOR UPDATE", (runner_id,))]
        after = [rerouted(invocation, error, time.time(), retry) for invocation in owned]
        if after:
            db.cursor().executemany(
                f"UPDATE {self._table} SET status = %s, owner = %s, attempts = %s, "
                "started_at = %s, finished_at = %s, error = %s, history = %s WHERE id = %s",
                [(i.status.value, i.owner, i.attempts, i.started_at, i.finished_at,
                  i.error.to_json() if i.error else None, _history(i), i.id) for i in after])
        if any(i.status is Status.PENDING for i in after):
            self._notify(db)
        return after

    def owned_by(self, runner_ids: Iterable[str]) -> list[Invocation]:
        ids = list(runner_ids)
        if not ids:
            return []
        return [_invocation(row) for row in self._rows(
            f"SELECT {COLUMNS} FROM {self._table} WHERE owner = ANY(%s) "
            f"AND status IN {OWNED} ORDER BY seq", (ids,))]

    def record_heartbeats(self, runners: Sequence[RunnerInfo], at: float) -> None:
        """On the server's clock: its time of arrival, less the heartbeat's age. One
        transaction that does not wait for the disk: a heartbeat a server crash loses is
        replaced by the next, and silence after an outage proves nothing anyway
        (:class:`pprunner.upkeep.Upkeep`); it was a flush a runner each second."""
        age = time.time() - at
        rows = [(r.id, r.kind.value, r.pid, r.host, r.supervisor, r.slot, r.started_at, age,
                 r.phase) for r in runners]

        def beat(db: Any, _resent: bool) -> None:
            with db.transaction():
                db.execute("SET LOCAL synchronous_commit TO off")
                db.cursor().executemany(
                    f"INSERT INTO {self._runners_table} (id, kind, pid, host, supervisor, "
                    "slot, started_at, heartbeat_at, phase) VALUES (%s, %s, %s, %s, %s, %s, "
                    f"%s, {SERVER_NOW} - %s, %s) ON CONFLICT (id) DO UPDATE SET heartbeat_at "
                    "= excluded.heartbeat_at, pid = excluded.pid, phase = excluded.phase", rows)

        if rows:
            self._run(beat)

    def forget_runners(self, runner_ids: Iterable[str]) -> None:
        ids = list(runner_ids)
        self._drop_listeners(ids)
        if ids:
            self._rows(f"DELETE FROM {self._runners_table} WHERE id = ANY(%s) RETURNING id",
                       (ids,))

    def runners(self) -> list[RunnerInfo]:
        return self._runners("")

    def stale_runners(self, older_than: float) -> list[RunnerInfo]:
        return self._runners(f"WHERE heartbeat_at < {SERVER_NOW} - %s", older_than)

    def _runners(self, where: str, *parameters: Any) -> list[RunnerInfo]:
        return [RunnerInfo(id=id_, kind=RunnerKind(kind), pid=pid, host=host,
                           supervisor=supervisor, slot=slot, started_at=started_at,
                           heartbeat_at=heartbeat_at, phase=phase)
                for id_, kind, pid, host, supervisor, slot, started_at, heartbeat_at, phase
                in self._rows("SELECT id, kind, pid, host, supervisor, slot, started_at, "
                              f"heartbeat_at, phase FROM {self._runners_table} {where} "
                              "ORDER BY started_at", parameters)]

    # -- the operator's -------------------------------------------------------------------

    def requeue(self, invocation_ids: Iterable[str] | None) -> list[Invocation]:
        among = "" if invocation_ids is None else "AND id = ANY(%(ids)s) "
        ids = [] if invocation_ids is None else list(invocation_ids)

        def requeue(db: Any, _resent: bool) -> list[Invocation]:
            with db.transaction():
                rows = db.execute(f"SELECT {COLUMNS} FROM {self._table} WHERE status = "
                                  f"'FAILED' {among}ORDER BY seq FOR UPDATE",
                                  {"ids": ids}).fetchall()
                after = [requeued(_invocation(row)) for row in rows]
                if after:
                    db.execute(f"UPDATE {self._table} SET status = 'PENDING', owner = NULL, "
                               "attempts = 0, started_at = NULL, finished_at = NULL, "
                               "not_before = NULL WHERE id = ANY(%s)", ([i.id for i in after],))
                    self._notify(db)
            return after

        return self._run(requeue)

    def purge(self, finished_before: float, limit: int) -> int:
        number: int = self._rows(
            f"WITH gone AS (DELETE FROM {self._table} WHERE seq IN (SELECT seq FROM "
            f"{self._table} WHERE status IN {ENDED} AND finished_at < %s ORDER BY "
            f"finished_at LIMIT %s) RETURNING 1) SELECT count(*) FROM gone",
            (finished_before, limit))[0][0]
        return number

    # -- inspection ------------------------------------------------------------------

    def get(self, invocation_id: str) -> Invocation:
        rows = self._rows(f"SELECT {COLUMNS} FROM {self._table} WHERE id = %s",
                          (invocation_id,))
        if not rows:
            raise missing(invocation_id)
        return _invocation(rows[0])

    def invocations(self, status: Status, limit: int) -> list[Invocation]:
        return [_invocation(row) for row in self._rows(
            f"SELECT {COLUMNS} FROM {self._table} WHERE status = %s ORDER BY seq DESC "
            "LIMIT %s", (status.value, limit))]

    def ended_since(self, since: float) -> dict[Status, int]:
        ended = ended_template()
        for status, number in self._rows(
                f"SELECT status, count(*) FROM {self._table} WHERE status IN {ENDED} "
                "AND finished_at >= %s GROUP BY status", (since,)):
            ended[Status(status)] = number
        return ended

    def latest_failures(self, limit: int) -> list[Invocation]:
        return [_invocation(row) for row in self._rows(
            f"SELECT {COLUMNS} FROM {self._table} WHERE status IN {ENDED} AND "
            "status = 'FAILED' ORDER BY finished_at DESC LIMIT %s", (limit,))]

    def counts(self) -> dict[Status, int]:
        counts = counts_template()
        for status, number in self._rows(
                f"SELECT status, count(*) FROM {self._table} GROUP BY status"):
            counts[Status(status)] = number
        return counts

    def close(self) -> None:
        self._after_fork()
        for connection in [*self._spare, *self._listeners.values()]:
            connection.close()
        self._spare, self._listeners = [], {}


@pprunner.hookimpl
def pprunner_register_backends(register: Callable[..., None]) -> None:
    for scheme in ("postgresql", "postgres"):
        register(scheme, PostgresBackend)
