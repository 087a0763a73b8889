"""The ``redis://`` backend: many supervisors on many hosts share one queue.

``redis://[:password@]host:6379/0?prefix=NAME``, ``rediss://...`` (TLS),
``unix:///path/to/redis.sock?db=0&prefix=NAME``, a master under Sentinel
(``redis+sentinel://s1:26379,s2:26379/mymaster/0``) or a client the user
built (``redis+client://package.module:name``); see :mod:`.connect`. Needs
the ``redis`` client (``pip install -e '.[redis]'`` in the clone). ``prefix``
(default ``pprunner``) starts every key, so several apps can share one server.

Claiming is a reliable-queue move inside one Lua script: ``LMOVE`` takes
the oldest due id from ``p:queue`` into the runner's own
``p:owned:<runner>`` list and marks it RUNNING for that runner, so an id is
never in two runners' lists and a dead runner's list is exactly what the
reroute hands back. An enqueue is no script: HSET, RPUSH and an LLEN of
``p:idle`` sent together. A runner with nothing to claim is registered in
``p:idle`` by the claim script and blocks on its own inbox stream (``XREAD
BLOCK``, on the server, no polling); an enqueue that sees idle runners sends
one more script (``HAND_OUT``), which claims what is queued for them and adds
each whole record to its runner's stream, so an idle worker starts without
another round trip of its own. Every owner-only
change is one Lua script that checks the owner first, so a late completion
from a runner that lost the invocation is refused; a worker's completion and
its next claim are one script, one round trip. With ``?batch=N`` a worker that
keeps finishing tasks quickly claims up to N at once and writes their
completions together with its next claim (:mod:`pprunner.batching`, the
trade it makes). Reroute and recovery use the
core's one rule (:func:`pprunner.backend.rerouted`) inside a WATCH/MULTI
transaction; the recovery watches the lost runner's record, so of several
supervisors that try at once exactly one succeeds.

The scripts and the inbox reads, the hot paths, go over connections of the
backend's own rather than through redis-py's client: its dispatch layers
cost more than the round trip itself, and its silent resends would hide a
lost reply from the scripts, which must know a resend to stay idempotent.

Waiting for an invocation to end blocks on the server as well: the waiter
registers a token of its own with the invocations it waits for, in the
script that checks none has ended; the script that ends one pushes the id
to that token's list, on which the waiter blocks (``BLPOP``).

Once connected, a Redis that restarts or goes away is waited for: every
operation is sent again at once, then retried with a growing pause (0.1 s
up to 5 s) and one log line per outage, so nothing crashes or spins, and
work resumes when Redis returns; for how long is ``keep_waiting``'s to say
(a producer: ``outage_timeout``). A Redis that cannot be reached at start is
an error at once. On a Redis Cluster (``redis+cluster://``) the prefix is the
hash tag of every key, so a namespace is one slot: its scripts run on the node
that serves it, and a failover that moves the slot is an outage like any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

import pprunner
from pprunner.backend import Admin, Pausing, Recovery, check_owner_change, missing, rerouted
from pprunner.batching import Batch, Finished, log_refused
from pprunner.errors import BackendError, IllegalTransition, UnknownInvocation
from pprunner.invocation import (
    OWNED_STATUSES,
    ErrorInfo,
    Invocation,
    RunnerInfo,
    RunnerKind,
    Status,
)
from pprunner.plugins import install_extra

from . import scripts
from .connect import CLIENT_SCHEME, CLUSTER_SCHEMES, SENTINEL_SCHEMES, async_connection, connect
from .records import ALLOWED, fields_of, flat, inbox_entry, invocation_from, pairs

if TYPE_CHECKING:
    import asyncio

    from pprunner.awaiting import EndingsWatcher

logger = logging.getLogger("pprunner.redis")
T = TypeVar("T")

#: the longest a claim (or a wait for an ending) blocks on the server in one go; it
#: then looks at due retries and wake-ups (or at the invocations) again. Well under
#: SOCKET_TIMEOUT: redis-py would cut a block longer than that short with a TimeoutError.
BLOCK_MAX = 1.0
#: how long a reply may take before the connection counts as lost: every command
#: answers in milliseconds and blocks last at most BLOCK_MAX, so 10 s means a link
#: that stalled, and the outage is logged and waited out instead of sat through
SOCKET_TIMEOUT = 10.0
#: a runner's record expires this long after its last heartbeat; its entry in
#: ``p:runners`` (what staleness and recovery go by) stays until it is recovered
RUNNER_RECORD_TTL = 7 * 24 * 3600
RETRY_PAUSE_MAX = 5.0
#: the oldest server the scripts run on (LMOVE, XTRIM MINID); Valkey reports a Redis version
MIN_SERVER = (6, 2)
#: seconds a caller's registration as a waiter lasts unless renewed: a waiter renews it
#: each time it looks again (NOTIFIED_RECHECK), so only one that died leaves it behind
WAITER_TTL = 60
#: how often a worker that keeps completing and claiming moves the due retries to the
#: queue (a claim that finds the queue empty always does): a retry is due at most this
#: much later than its ``not_before`` under a backlog, and a task costs a command fewer
RETRIES_EVERY = 0.1
#: how long a change waits for its replicas (``wait_replicas``) before it counts anyway
REPLICA_WAIT_MS = 1000
#: after a WAIT that timed out (the replicas are gone, as after a failover that left the
#: new master alone), changes count without waiting for this many seconds, then try again
REPLICA_RECHECK = 10

#: the statuses with a sorted set of their own (``p:status:<S>``, see ``scripts``)
SORTED_STATUSES = (Status.PAUSED, Status.FAILED)


def _with_sha(script: str) -> tuple[str, str]:
    """(the SHA1 that EVALSHA names ``script`` by, ``script``)."""
    return hashlib.sha1(script.encode()).hexdigest(), script


class RedisBackend(Pausing, Admin, Recovery):
    notifies_final = True
    retry_pause_max = RETRY_PAUSE_MAX

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import redis
        except ImportError:
            raise BackendError(f"the redis backend needs the redis client: "
                               f"{install_extra('redis')}") from None
        self._redis = redis
        #: what means Redis is away for now (waited out, not an error): a lost
        #: connection, and a cluster's slot between masters
        self._outages: tuple[type[BaseException], ...] = (
            redis.ConnectionError, redis.TimeoutError, redis.exceptions.MovedError,
            redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
            redis.exceptions.RedisClusterException)
        connection = connect(url, redis, socket_timeout=SOCKET_TIMEOUT,
                             socket_connect_timeout=5.0)
        # Any: redis-py's annotations do not know this client returns bytes
        self.client: Any = connection.client
        self.prefix = connection.prefix
        #: a cluster's client: the backend's own connections go to the node of the
        #: namespace's slot, and are dropped when a failover moves it
        self._cluster = connection.cluster
        #: how many replicas must have a script's changes before its reply counts
        self.wait_replicas = connection.wait_replicas
        #: the most invocations a worker claims at once (``batch=N``, :mod:`pprunner.batching`)
        self.batch = connection.batch
        #: per runner claiming here: what it claimed ahead and finished unwritten
        self._batches: dict[str, Batch] = {}
        #: until when changes count without replicas, after a WAIT that timed out
        self._unreplicated_until = 0.0
        #: name -> (SHA1, text) of each script, run by EVALSHA
        self._scripts = {name: _with_sha(getattr(scripts, name))
                         for name in ("CLAIM", "CLAIM_ONE_OF", "COMPLETE_AND_CLAIM", "CHANGE",
                                      "GIVE_BACK", "ENQUEUE_AGAIN", "HAND_OUT", "REQUEUE",
                                      "HEARTBEAT", "WATCH_ENDING", "UNWATCH_ENDING", "ANNOUNCE",
                                      "PURGE", "RUNNING", "COUNTS")}
        #: the backend's own connections not in use now (see ``_command``)
        self._spare: list[Any] = []
        self._connected = False
        #: whether the last operation had to be sent again (its first reply may be lost)
        self._retried = False
        #: when a completion here last asked for the due retries (``RETRIES_EVERY``)
        self._retries_looked_at = float("-inf")
        #: per runner: the id of the last inbox entry it read
        self._last_entry: dict[str, bytes] = {}
        self._pid = os.getpid()

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _run_retrying(self, script: str, *args: Any) -> Any:
        """A Lua script, retried while Redis is away (see ``scripts`` for each one)."""
        return self._retrying(lambda: self._script(script, *args))

    def _run_telling_resends(self, script: str, first: Sequence[Any], *rest: Any) -> Any:
        """A Lua script, retried while Redis is away, whose argument after ``first`` is
        '1' on a resend (its first send may have been carried out, its reply lost), so
        the script can stay idempotent and skip those checks on a first send."""
        sends = itertools.count()
        return self._retrying(lambda: self._script(
            script, *first, "1" if next(sends) else "0", *rest))

    def _script(self, name: str, *args: Any) -> Any:
        """EVALSHA of one of ``scripts``, loaded first if the server does not have it
        (a server restarted without persistence, or a SCRIPT FLUSH)."""
        sha, text = self._scripts[name]
        # the prefix is the one key declared: it routes the script to the namespace's
        # node in a cluster, where every key the script touches carries it as hash tag
        evalsha = ("EVALSHA", sha, 1, self.prefix, self.prefix, *args)
        try:
            return self._durably(evalsha)[0]
        except self._redis.exceptions.NoScriptError:
            self._command("SCRIPT", "LOAD", text)
            return self._durably(evalsha)[0]

    def _durably(self, *commands: Sequence[Any]) -> list[Any]:
        """Commands sent together whose replies count only once ``wait_replicas``
        replicas have their writes: a WAIT goes right behind them, and replies are
        handed on only with WAIT's. Replication is asynchronous, so without it a
        failover could lose a claim a worker has started on (it would run twice) or
        an acknowledged enqueue (lost). A reply lost with the master is sent again,
        as any other."""
        wanted = self.wait_replicas
        if not wanted or time.monotonic() < self._unreplicated_until:
            return self._commands(*commands)
        *replies, acknowledged = self._commands(*commands, ("WAIT", wanted, REPLICA_WAIT_MS))
        if acknowledged < wanted:
            self._unreplicated_until = time.monotonic() + REPLICA_RECHECK
            logger.warning("Redis at %s: %d of %d replicas acknowledged a change within "
                           "%d ms; changes count without them for the next %d s", self.url,
                           acknowledged, wanted, REPLICA_WAIT_MS, REPLICA_RECHECK)
        return replies

    def _command(self, *args: Any) -> Any:
        """One command and its raw reply, on a connection of the backend's own."""
        return self._commands(args)[0]

    def _commands(self, *commands: Sequence[Any]) -> list[Any]:
        """Commands sent together, and their raw replies, on a connection of the
        backend's own.

        Connections are made like the client's and kept in ``_spare`` while
        unused; popping and appending a list is atomic, so threads need no lock.
        A connection that fails is closed by redis-py and reconnects when next
        used; every reply is read before the connection goes back (an error
        reply is raised only then), so none is left for the next command.
        """
        try:
            connection = self._spare.pop()
        except IndexError:
            connection = self._new_connection()
        try:
            # connect() first: redis-py's send would connect on its own but skip the
            # override by which a Sentinel connection asks the sentinels for the master
            connection.connect()
            connection.send_packed_command(connection.pack_commands(commands))
            replies = [self._reply(connection) for _ in commands]
        except (self._redis.ConnectionError, self._redis.TimeoutError):
            self._moved(connection)
            raise
        self._spare.append(connection)
        for reply in replies:
            if isinstance(reply, self._redis.exceptions.ResponseError):
                if self._cluster and isinstance(reply, self._outages):
                    self._moved(connection)
                    raise self._redis.ConnectionError(f"the namespace moved: {reply}")
                raise reply
        return replies

    def _new_connection(self) -> Any:
        """A connection made like the client's: to the one server (or the master
        Sentinel names), or to the cluster node that serves the namespace's slot."""
        if self._cluster:
            node = self.client.get_node_from_key(self.prefix)
            return node.redis_connection.connection_pool.make_connection()
        return self.client.connection_pool.make_connection()

    def _moved(self, connection: Any) -> None:
        """After a failure: with a cluster, the namespace's slot may have another
        master now (a failover), so the spare connections go and the client reads
        the cluster's slots again; the caller's retry then reaches the new master."""
        if not self._cluster:
            return
        connection.disconnect()
        if connection in self._spare:
            self._spare.remove(connection)
        for spare in self._spare:
            spare.disconnect()
        self._spare = []
        with contextlib.suppress(self._redis.RedisError,
                                 self._redis.exceptions.RedisClusterException):
            self.client.nodes_manager.initialize()

    def _reply(self, connection: Any) -> Any:
        """The next reply on ``connection``; an error reply is returned, not raised."""
        try:
            return connection.read_response()
        except self._redis.exceptions.ResponseError as exc:
            return exc

    def _do(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis command, retried while Redis is away."""
        return self._retrying(lambda: getattr(self.client, command)(*args, **kwargs))

    def _retrying(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; while Redis is unreachable, wait for it (once connected).

        The first resend goes at once and says nothing: a connection that the
        server closed while it sat unused (an idle timeout, a restart long ago)
        is no outage. ``_retried`` then tells the caller its reply may be lost.
        """
        if self._pid != os.getpid():  # a forked child must not share the parent's sockets
            if not self._cluster:  # a cluster's node pools reset themselves in a child
                self.client.connection_pool.reset()
            self._spare, self._batches = [], {}
            self._pid = os.getpid()
        pause, outage, failures = 0.1, 0.0, 0
        while True:
            try:
                if not self._connected:
                    self._check_server()
                result = operation()
            except self._outages as exc:
                if not self._connected:
                    raise BackendError(f"cannot reach Redis at {self.url}: {exc}") from None
                failures += 1
                if failures == 1:
                    continue
                if not outage:
                    outage = time.monotonic()
                    logger.warning("Redis at %s is unreachable (%s); retrying", self.url, exc)
                lasted = time.monotonic() - outage
                if not self.keep_waiting(lasted):
                    raise BackendError(f"Redis at {self.url} has been unreachable for "
                                       f"{lasted:.0f} s ({exc}); stopped waiting for it"
                                       ) from None
                time.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX)
                continue
            except self._redis.RedisError as exc:
                raise BackendError(f"Redis at {self.url} refused an operation: {exc}") from exc
            if outage:
                logger.warning("Redis at %s is back after %.1f s", self.url,
                               time.monotonic() - outage)
                self.outage_ended_at = time.time()
            self._connected = True
            self._retried = bool(failures)
            return result

    def _check_server(self) -> None:
        """Before the first operation: a server too old for the scripts is one clear
        error at start, not an unknown command in the middle of a claim. A user whose
        ACL forbids INFO (a @dangerous command) is not held up: the scripts speak then."""
        try:
            version = str(self._info_server().get("redis_version", "0"))
        except self._redis.exceptions.ResponseError:
            return
        if tuple(int(part) for part in version.split(".")[:2]) < MIN_SERVER:
            raise BackendError(f"Redis at {self.url} is version {version}; pprunner needs "
                               f"{'.'.join(map(str, MIN_SERVER))} or newer")

    def _info_server(self) -> dict[str, Any]:
        """INFO server of the server that holds the namespace."""
        if self._cluster:
            return dict(self.client.info("server", target_nodes=self.client.get_node_from_key(
                self.prefix)))
        return dict(self.client.info("server"))

    # -- producers and workers -------------------------------------------------------

    def enqueue(self, invocation: Invocation) -> None:
        """HSET, RPUSH and LLEN of the idle list, sent together without a script (a
        script's interpreter cost the server more than the two writes): ids are new
        (``Task.enqueue`` makes them), so nothing needs looking at first, and the hash
        is written before the id reaches the queue. When runners wait idle, a second
        round trip (HAND_OUT) hands them what is queued. A resend after a lost reply
        is ENQUEUE_AGAIN, which finds what the first send did."""
        fields = flat({**fields_of(invocation), "status": Status.PENDING.value, "attempts": 0})
        key, queue, idle = self._key("inv", invocation.id), self._key("queue"), self._key("idle")
        sends = itertools.count()

        def send() -> int:
            if next(sends):
                return int(self._script("ENQUEUE_AGAIN", invocation.id, *fields))
            *_, waiting = self._durably(("HSET", key, *fields), ("RPUSH", queue, invocation.id),
                                        ("LLEN", idle))
            return int(waiting)

        if self._retrying(send):
            self._run_retrying("HAND_OUT", repr(time.time()))

    def claim(self, runner_id: str, timeout: float) -> Invocation | None:
        """One script round trip when work is waiting. When none is, the same
        script registers the runner as idle and it blocks on its inbox stream,
        where an enqueue hands it the invocation it has already claimed for it:
        one hop, no polling. With ``batch``, the next invocation claimed ahead
        instead while there is one."""
        batch = self._batch(runner_id)
        ahead = batch.take()
        if ahead is not None:
            return ahead
        self._settle(runner_id)
        deadline = time.monotonic() + timeout
        wakeups: int | None = None
        while True:
            wait = time.monotonic() < deadline
            answer = self._try_claim(runner_id, wakeups, wait, batch.size)
            if isinstance(answer, list):
                claimed = batch.claimed(self._received(runner_id, answer))
                if claimed is not None:
                    return claimed
                continue  # a wake-up sentinel: the counter says whether it was for us
            batch.size = 1  # idle: what comes next may be slow, so batches start over
            if not wait or (wakeups is not None and answer != wakeups):
                return None  # out of time, or woken: the script did not register it idle
            wakeups = answer
            entry = self._read_inbox(runner_id, min(deadline - time.monotonic(), BLOCK_MAX))
            if entry:
                claimed = batch.claimed(self._received(runner_id, [entry]))
                if claimed is not None:
                    return claimed  # the enqueue took this runner off the idle list
            # timed out or woken: the next CLAIM registers it again, or takes it off

    def _batch(self, runner_id: str) -> Batch:
        """``runner_id``'s batch (made on its first claim here)."""
        return self._batches.setdefault(runner_id, Batch(self.batch))

    def _try_claim(self, runner_id: str, wakeups: int | None, wait: bool,
                   size: int) -> list[list[bytes]] | int:
        """CLAIM; a resend after a dropped connection says so (see the script)."""
        answer: list[list[bytes]] | int = self._run_telling_resends(
            "CLAIM", (runner_id, repr(time.time())), self._last_entry.get(runner_id, b"0-0"),
            "" if wakeups is None else wakeups, "1" if wait else "0", size)
        return answer

    def _read_inbox(self, runner_id: str, block: float) -> list[bytes] | None:
        """The runner's next inbox entry, blocking up to ``block`` seconds on the
        server: [entry id, field, value, ...], or None."""
        milliseconds = max(int(block * 1000), 1)
        inbox, last = self._key("inbox", runner_id), self._last_entry.get(runner_id, b"0-0")
        return inbox_entry(self._retrying(lambda: self._command(
            "XREAD", "COUNT", 1, "BLOCK", milliseconds, "STREAMS", inbox, last)))

    def _received(self, runner_id: str, answer: Sequence[list[bytes]]) -> list[Invocation]:
        """Claims as the scripts give them, each [inbox entry id or b'', field, value,
        ...]: the invocations, in queue order, wake-up sentinels left out."""
        claimed = []
        for record in answer:
            if record[0]:
                self._last_entry[runner_id] = record[0]
            fields = pairs(record, 1)
            if b"wakeup" not in fields:
                claimed.append(invocation_from(fields))
        return claimed

    def claim_one_of(self, runner_id: str, invocation_ids: Sequence[str]) -> Invocation | None:
        if not invocation_ids:
            return None
        raw = self._run_retrying("CLAIM_ONE_OF", runner_id, repr(time.time()), *invocation_ids)
        return invocation_from(pairs(raw)) if raw else None

    def wakeup(self) -> None:
        """Bump the wake-up counter and add a sentinel to every idle runner's inbox:
        a claim blocked there reads it, sees the counter changed, and returns None."""
        self._do("incr", self._key("wakeups"))
        for raw in self._do("lrange", self._key("idle"), 0, -1):
            self._do("xadd", self._key("inbox", raw.decode()), {"wakeup": "1"}, maxlen=64,
                     approximate=True)

    def wait_any(self, invocation_ids: Sequence[str], timeout: float) -> None:
        """Blocks on the server (BLPOP on a list of this call's own): the script that
        ends one of them pushes its id there, so a result is seen the moment it is
        stored, and a long wait sends nothing until then (see ``scripts.WATCH_ENDING``)."""
        token = os.urandom(8).hex()
        if self._run_retrying("WATCH_ENDING", token, WAITER_TTL, *invocation_ids):
            return
        try:
            block = repr(min(max(timeout, 0.001), BLOCK_MAX))
            self._retrying(lambda: self._command("BLPOP", self._key("wake", token), block))
        finally:
            self._run_retrying("UNWATCH_ENDING", token, *invocation_ids)

    def watch_endings(self, loop: asyncio.AbstractEventLoop) -> EndingsWatcher:
        """The loop's waiters share one ``redis.asyncio`` connection blocked on the
        server, and one for their registrations (see :mod:`.endings`); a Sentinel,
        Cluster or user-built client's waiters get the core's helper thread."""
        def connection() -> Any:
            return async_connection(self.url, socket_timeout=SOCKET_TIMEOUT,
                                    socket_connect_timeout=5.0)

        listener = connection()
        if listener is None:
            return super().watch_endings(loop)
        from .endings import RedisEndingsWatcher

        return RedisEndingsWatcher(self, loop, listener, connection())

    def complete_and_claim(self, invocation_id: str, runner_id: str,
                           result: bytes) -> Invocation | None:
        """One script (COMPLETE_AND_CLAIM), one round trip. With ``batch``: while the
        worker holds invocations claimed ahead, the next of them and no round trip;
        after the last, the completions kept meanwhile go in that one script."""
        batch = self._batch(runner_id)
        ahead = batch.finish_and_take(invocation_id, result, lambda: self._give_back(runner_id))
        if ahead is not None:
            return ahead
        finished = batch.written()
        done, claimed = self._complete(runner_id, finished, batch.size)
        retried = self._retried
        log_refused(finished[:-1], done,
                    lambda i: self._refused(i, runner_id, Status.SUCCESS, retried))
        if invocation_id not in done:
            if retried:  # the send whose reply was lost may have claimed: hand that back
                self.reroute(runner_id, None)
            self._refused(invocation_id, runner_id, Status.SUCCESS, retried)
            return None
        return batch.claimed(self._received(runner_id, claimed))

    def _complete(self, runner_id: str, finished: Sequence[Finished],
                  size: int) -> tuple[set[str], list[list[bytes]]]:
        """COMPLETE_AND_CLAIM: write ``finished`` and claim up to ``size`` -> (the ids
        written, the claims)."""
        completions = itertools.chain.from_iterable(
            (f.invocation_id, f.result, "" if f.started_at is None else repr(f.started_at),
             repr(f.finished_at)) for f in finished)
        retries = size > 0 and time.monotonic() >= self._retries_looked_at + RETRIES_EVERY
        if retries:
            self._retries_looked_at = time.monotonic()
        written, *claimed = self._run_retrying("COMPLETE_AND_CLAIM", runner_id,
                                               repr(time.time()), size, "1" if retries else "0",
                                               len(finished), *completions)
        return {f.invocation_id for f, ok in zip(finished, written, strict=True) if ok}, claimed

    def _settle(self, runner_id: str, *, give_back: bool = False) -> None:
        """Write ``runner_id``'s completions kept for its batch; with ``give_back``, then
        return what it claimed ahead to the queue (:meth:`_give_back`)."""
        finished = self._batches[runner_id].written() if runner_id in self._batches else []
        if finished:
            done, _ = self._complete(runner_id, finished, 0)
            retried = self._retried
            log_refused(finished, done,
                        lambda i: self._refused(i, runner_id, Status.SUCCESS, retried))
        if give_back:
            self._give_back(runner_id)

    def _give_back(self, runner_id: str) -> None:
        """Return what ``runner_id`` claimed ahead to the head of the queue as never
        started (its attempt taken back), and tell idle claimers."""
        batch = self._batches.get(runner_id)
        ahead = [] if batch is None else batch.given_back()
        if ahead and self._run_retrying("GIVE_BACK", runner_id, *ahead):
            self.wakeup()

    def _change_args(self, invocation_id: str, new: Status, *, release: bool,
                     values: dict[str, Any] | None = None, clear: Sequence[str] = (),
                     error: ErrorInfo | None = None,
                     delay_until: float | None = None) -> list[Any]:
        """The arguments of ``change`` in ``scripts`` (those after the runner)."""
        sets = flat(values or {})
        return [invocation_id, new.value, ALLOWED[new], "1" if release else "0",
                json.dumps(attrs.asdict(error)) if error else "",
                repr(delay_until) if delay_until is not None else "",
                len(sets) // 2, *sets, len(clear), *clear]

    def _change(self, invocation_id: str, runner_id: str, new: Status, **options: Any) -> None:
        """One owner-only status change (see ``scripts.CHANGE``), after the completions
        kept for the runner's batch; a task that pauses to wait first gives back what
        its worker claimed ahead, which it may be waiting for."""
        self._settle(runner_id, give_back=new is Status.PAUSED)
        if not self._run_retrying("CHANGE", runner_id,
                                  *self._change_args(invocation_id, new, **options)):
            self._refused(invocation_id, runner_id, new, self._retried)

    def _refused(self, invocation_id: str, runner_id: str, new: Status, retried: bool) -> None:
        """Raise why a change was refused — unless it was our own, whose reply was lost."""
        current = self.get(invocation_id)
        if retried and current.status is new and current.owner in (runner_id, None):
            return  # our own change, whose reply a dropped connection lost
        check_owner_change(current, runner_id, new)
        raise IllegalTransition(f"invocation {invocation_id} changed while becoming {new}")

    def complete(self, invocation_id: str, runner_id: str, result: bytes) -> None:
        self._change(invocation_id, runner_id, Status.SUCCESS, release=True,
                     values={"result": result, "finished_at": repr(time.time())})

    def fail(self, invocation_id: str, runner_id: str, error: ErrorInfo) -> None:
        self._change(invocation_id, runner_id, Status.FAILED, release=True, error=error,
                     values={"error": error.to_json(), "finished_at": repr(time.time())})

    def retry(self, invocation_id: str, runner_id: str, error: ErrorInfo,
              not_before: float) -> None:
        self._change(invocation_id, runner_id, Status.PENDING, release=True, error=error,
                     values={"error": error.to_json(), "not_before": repr(not_before)},
                     clear=("owner", "started_at"), delay_until=not_before)

    def pause(self, invocation_id: str, runner_id: str,
              waiting_for: Sequence[str] = ()) -> None:
        self._change(invocation_id, runner_id, Status.PAUSED, release=False,
                     values={"waiting_for": json.dumps(list(waiting_for))})

    def resume(self, invocation_id: str, runner_id: str) -> None:
        self._change(invocation_id, runner_id, Status.RUNNING, release=False,
                     values={"waiting_for": "[]"})

    # -- the supervisor and recovery ---------------------------------------------------

    def reroute(self, runner_id: str, error: ErrorInfo | None, *,
                retry: bool = True) -> list[Invocation]:
        self._settle(runner_id)  # (claimed ahead: rerouted below, as never started)
        self._batches.pop(runner_id, None)
        return self._reroute(runner_id, error, retry, lost=False) or []

    def recover(self, runner_id: str, older_than: float,
                error: ErrorInfo) -> list[Invocation] | None:
        return self._reroute(runner_id, error, True, lost=True, older_than=older_than)

    def _reroute(self, runner_id: str, error: ErrorInfo | None, retry: bool, *, lost: bool,
                 older_than: float = 0.0) -> list[Invocation] | None:
        """Hand back what ``runner_id`` holds, in one optimistic transaction.

        With ``lost``, only if the runner's heartbeat is older than ``older_than``;
        the runner's record is watched and deleted, so concurrent recoverers
        cannot both succeed (the loser sees the record gone and returns None).
        """
        owned_key, runner_key = self._key("owned", runner_id), self._key("runner", runner_id)

        def attempt(pipe: Any) -> list[Invocation] | None:
            if lost:
                beat = pipe.zscore(self._key("runners"), runner_id)
                if beat is None or beat >= self._server_time() - older_than:
                    return None
            ids = [raw.decode() for raw in pipe.lrange(owned_key, 0, -1)]
            for invocation_id in ids:
                pipe.watch(self._key("inv", invocation_id))
            held = [self._get_in(pipe, i) for i in ids]
            after = [rerouted(i, error, time.time(), retry) if i.status in OWNED_STATUSES
                     and i.owner == runner_id else i for i in held]
            pipe.multi()
            for before, now in zip(held, after, strict=True):
                self._write(pipe, before, now)
            pipe.delete(owned_key, self._key("inbox", runner_id))
            pipe.lrem(self._key("idle"), 0, runner_id)
            pipe.srem(self._key("claimers"), runner_id)
            if lost:
                pipe.zrem(self._key("runners"), runner_id)
                pipe.delete(runner_key)
            return [now for before, now in zip(held, after, strict=True) if before != now
                    or now.status is Status.PENDING]

        moved: list[Invocation] | None = self._retrying(lambda: self.client.transaction(
            attempt, owned_key, runner_key, self._key("runners"), value_from_callable=True))
        if moved is not None and self.wait_replicas:
            self._replicated()
        ended = [i.id for i in moved or () if i.status is Status.FAILED]
        if ended:  # what the Lua scripts do for the endings they write
            self._run_retrying("ANNOUNCE", *ended)
        now = time.time()
        if moved and any(i.status is Status.PENDING and (i.not_before or 0) <= now
                         for i in moved):
            self.wakeup()  # idle runners block on their inboxes: tell them to look again
        return moved

    def _replicated(self) -> None:
        """Wait until the replicas have what this process wrote through redis-py's
        client (a transaction): WAIT counts a connection's own writes, so this one
        writes a key of its own first, which comes after them in the replication
        stream."""
        self._retrying(lambda: self._durably(("INCR", self._key("replicated"))))

    def _get_in(self, pipe: Any, invocation_id: str) -> Invocation:
        raw = pipe.hgetall(self._key("inv", invocation_id))
        if not raw:
            raise missing(invocation_id)
        return invocation_from(raw)

    def _write(self, pipe: Any, before: Invocation, after: Invocation) -> None:
        """Queue the commands that turn ``before`` into ``after`` (in a MULTI)."""
        key = self._key("inv", after.id)
        fields = fields_of(after)
        pipe.hset(key, mapping=fields)
        gone = [f for f in fields_of(before) if f not in fields]
        if gone:
            pipe.hdel(key, *gone)
        if before.status is not after.status:  # (PENDING: the queue below, not a set)
            if before.status in SORTED_STATUSES:
                pipe.zrem(self._key("status", before.status.value), after.id)
            if after.status in SORTED_STATUSES:
                pipe.zadd(self._key("status", after.status.value), {after.id: after.enqueued_at})
        if after.status is Status.PENDING:  # back at the head of the queue
            pipe.lrem(self._key("queue"), 0, after.id)
            pipe.lpush(self._key("queue"), after.id)
        if after.status.is_final and not before.status.is_final:
            pipe.zadd(self._key("ended"), {after.id: after.finished_at or 0.0})
            if after.status is Status.FAILED:
                pipe.zadd(self._key("failed"), {after.id: after.finished_at or 0.0})

    def owned_by(self, runner_ids: Iterable[str]) -> list[Invocation]:
        found = []
        for runner_id in runner_ids:
            for raw in self._do("lrange", self._key("owned", runner_id), 0, -1):
                invocation = self.get(raw.decode())
                if invocation.status in OWNED_STATUSES and invocation.owner == runner_id:
                    found.append(invocation)
        return found

    def record_heartbeats(self, runners: Sequence[RunnerInfo], at: float) -> None:
        """Heartbeats on the server's clock (see ``scripts.HEARTBEAT``)."""
        records = [(r.id, r.kind.value, r.pid, r.host, r.supervisor, r.slot, repr(r.started_at),
                    r.phase) for r in runners]
        age = repr(time.time() - at)
        self._run_retrying("HEARTBEAT", RUNNER_RECORD_TTL, age, *itertools.chain(*records))

    def _server_time(self) -> float:
        """The clock of the server that holds the namespace, which heartbeats are
        written and judged by."""
        seconds, micros = self._command("TIME")
        return float(seconds) + int(micros) / 1e6

    def forget_runners(self, runner_ids: Iterable[str]) -> None:
        ids = list(runner_ids)
        if ids:
            self._do("zrem", self._key("runners"), *ids)
            self._do("delete", *(self._key(kind, i) for i in ids for kind in ("runner", "inbox")))
            for runner_id in ids:
                self._do("lrem", self._key("idle"), 0, runner_id)
            self._do("srem", self._key("claimers"), *ids)

    def runners(self) -> list[RunnerInfo]:
        beats = self._do("zrange", self._key("runners"), 0, -1, withscores=True)
        return sorted(self._runner_records(beats), key=lambda r: r.started_at)

    def stale_runners(self, older_than: float) -> list[RunnerInfo]:
        def read() -> list[tuple[bytes, float]]:
            cutoff = self._server_time() - older_than
            beats: list[tuple[bytes, float]] = self.client.zrangebyscore(
                self._key("runners"), "-inf", f"({cutoff!r}", withscores=True)
            return beats

        return self._runner_records(self._retrying(read))

    def _runner_records(self, beats: list[tuple[bytes, float]]) -> list[RunnerInfo]:
        """RunnerInfo for each (id, heartbeat); a record that expired is rebuilt bare,
        so a runner silent for longer than its record's TTL can still be recovered."""
        found = []
        for raw_id, beat in beats:
            runner_id = raw_id.decode()
            info = self._do("hgetall", self._key("runner", runner_id))
            f = {k.decode(): v.decode() for k, v in info.items()}
            found.append(RunnerInfo(
                id=runner_id, kind=RunnerKind(f.get("kind", "worker")),
                pid=int(f.get("pid", 0)), host=f.get("host", "?"),
                supervisor=f.get("supervisor", ""), slot=int(f.get("slot", 0)),
                started_at=float(f.get("started_at", beat)), heartbeat_at=beat,
                phase=f.get("phase", "")))
        return found

    # -- inspection --------------------------------------------------------------------

    def get(self, invocation_id: str) -> Invocation:
        raw = self._do("hgetall", self._key("inv", invocation_id))
        if not raw:
            raise missing(invocation_id)
        return invocation_from(raw)

    def requeue(self, invocation_ids: Iterable[str] | None) -> list[Invocation]:
        if invocation_ids is None:
            invocation_ids = [raw.decode() for raw in
                              self._do("zrange", self._key("status", "FAILED"), 0, -1)]
        done = [i for i in invocation_ids if self._run_retrying("REQUEUE", i)]
        return [self.get(i) for i in done]

    def purge(self, finished_before: float, limit: int) -> int:
        purged: int = self._run_retrying("PURGE", repr(finished_before), limit)
        return purged

    def invocations(self, status: Status, limit: int) -> list[Invocation]:
        """PENDING ones are the newest ``limit`` of the queue and every retry waiting in
        ``p:delayed``, SUCCESS ones the ``limit`` that finished last, RUNNING ones read
        from the runners' owned lists (a sorted set of their own would cost every task
        one or two commands), sorted by ``enqueued_at``."""
        if status is Status.SUCCESS:
            return self._latest_successes(limit)
        if status is Status.RUNNING:
            running = [self.get(raw.decode()) for raw in self._run_retrying("RUNNING")]
            return sorted(running, key=lambda i: i.enqueued_at, reverse=True)[:limit]
        if status is not Status.PENDING:
            ids = self._do("zrevrange", self._key("status", status.value), 0, limit - 1)
            return [self.get(raw.decode()) for raw in ids]
        ids = [*self._do("lrange", self._key("queue"), -limit, -1),
               *self._do("zrange", self._key("delayed"), 0, -1)]
        found = []
        for raw in dict.fromkeys(ids):
            with contextlib.suppress(UnknownInvocation):  # ended and purged since
                found.append(self.get(raw.decode()))
        found = [i for i in found if i.status is Status.PENDING]
        return sorted(found, key=lambda i: i.enqueued_at, reverse=True)[:limit]

    def _latest_successes(self, limit: int) -> list[Invocation]:
        """The ``limit`` SUCCESS invocations that finished last, newest enqueued first:
        ``p:ended`` read from its end, ``limit`` at a time, failures skipped."""
        found: list[Invocation] = []
        start = 0
        while len(found) < limit:
            ids = self._do("zrevrange", self._key("ended"), start, start + limit - 1)
            if not ids:
                break
            for raw in ids:
                with contextlib.suppress(UnknownInvocation):  # purged since the listing
                    found.append(self.get(raw.decode()))
            found = [i for i in found if i.status is Status.SUCCESS]
            start += limit
        return sorted(found[:limit], key=lambda i: i.enqueued_at, reverse=True)

    def ended_since(self, since: float) -> dict[Status, int]:
        """Two ZCOUNTs in one MULTI: every ending is in ``p:ended``, a failure also in
        ``p:failed``, so none can be counted in one and not yet in the other."""
        def count() -> list[int]:
            pipe = self.client.pipeline(transaction=True)
            for key in ("ended", "failed"):
                pipe.zcount(self._key(key), repr(since), "+inf")
            return list(pipe.execute())

        ended, failed = self._retrying(count)
        return {Status.SUCCESS: ended - failed, Status.FAILED: failed}

    def latest_failures(self, limit: int) -> list[Invocation]:
        found = []
        for raw in self._do("zrevrange", self._key("failed"), 0, limit - 1):
            with contextlib.suppress(UnknownInvocation):  # purged since the listing
                found.append(self.get(raw.decode()))
        return found

    def counts(self) -> dict[Status, int]:
        """One script, so every count is of one moment (burst mode stops on a sum of
        them): the PENDING ones are the queue and the retries in ``p:delayed``, the
        SUCCESS ones ``p:ended`` less ``p:failed``, the RUNNING ones found in the
        runners' owned lists (see ``invocations``), the others a sorted set each."""
        queued, delayed, ended, failed, paused, failures, running = self._run_retrying("COUNTS")
        return {Status.PENDING: queued + delayed, Status.RUNNING: running,
                Status.PAUSED: paused, Status.SUCCESS: ended - failed, Status.FAILED: failures}

    def close(self) -> None:
        for connection in self._spare:
            connection.disconnect()
        self._spare.clear()
        self.client.close()


@pprunner.hookimpl
def pprunner_register_backends(register: Callable[..., None]) -> None:
    for scheme in ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES,
                   CLIENT_SCHEME):
        register(scheme, RedisBackend)
