"""The promises of :class:`pprunner.backend.Backend`, as tests any backend can run.

Subclass :class:`BackendContract` under a name pytest collects and provide a
``backend`` fixture that yields a fresh, EMPTY backend and closes it
afterwards. Each test checks one promise from the Backend docstrings; the
ownership tests matter most, since "only the owner may finish an invocation"
is what makes a late result from a runner that lost its invocation harmless.

The core's tests always run; the tests of an optional capability (Pausing,
Admin, Recovery) run when the backend declares it and are skipped, naming
the capability, when it does not. A test takes the ``pausing``, ``admin`` or
``recovery`` fixture instead of ``backend`` when it checks that capability
alone; one that also holds a PAUSED invocation skips through
:func:`enqueue_claimed` (a core promise such as reroute then still runs for
RUNNING ones).

No test sleeps to let another thread catch up: threads hand their outcome
back through :class:`Background`, and every wait is bounded.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import ClassVar, Generic, NoReturn, TypeVar, cast

import attrs
import pytest

from pprunner.backend import Admin, Backend, Pausing, Recovery, capability_methods
from pprunner.errors import IllegalTransition, NotOwner, UnknownInvocation
from pprunner.invocation import (
    ErrorInfo,
    Invocation,
    RunnerInfo,
    RunnerKind,
    Status,
    new_invocation_id,
)

T = TypeVar("T")

DEFAULT_PAYLOAD = b'{"args":[],"kwargs":{}}'
#: how long a claim waits on a queue that a test knows to be empty
EMPTY_CLAIM_TIMEOUT = 0.05
#: how much later than its timeout a blocking call may return on a loaded machine
SLACK = 1.0
#: the bound on any wait for another thread, so a broken backend fails instead of hanging
THREAD_TIMEOUT = 30.0
#: seconds a heartbeat on a store's own clock may differ from the ``at`` it was given
CLOCK_TOLERANCE = 1.0
#: what a supervisor records when a worker died mid-task
CRASH = ErrorInfo("WorkerDied", "worker 7 died with signal 9")
#: how long a test has a store that notifies block in ``wait_any`` while nothing ends
NOTIFIED_BLOCK = 0.3
#: what a producer's plugins may attach to an invocation: a W3C trace context, and a
#: value beyond ASCII
HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
           "tracestate": "congo=t61rcWkgMzE", "note": "grüße, 東京"}


def make_invocation(
    task: str = "t",
    max_attempts: int = 3,
    payload: bytes = DEFAULT_PAYLOAD,
    serializer: str = "json",
    headers: Mapping[str, str] | None = None,
) -> Invocation:
    """A new PENDING invocation with a fresh id, ready to enqueue."""
    return Invocation(id=new_invocation_id(), task=task, payload=payload,
                      serializer=serializer, max_attempts=max_attempts,
                      headers=dict(headers or {}))


def make_runner(runner_id: str, started_at: float = 1_000.0) -> RunnerInfo:
    """A worker record; ``started_at`` is fixed so the listing order is known."""
    return RunnerInfo(id=runner_id, kind=RunnerKind.WORKER, pid=os.getpid(),
                      supervisor="contract-supervisor", slot=1, started_at=started_at)


def skip_undeclared(backend: Backend, capability: type) -> NoReturn:
    """Skip the running test: it checks ``capability``, which ``backend`` does not declare."""
    pytest.skip(f"{type(backend).__name__} does not declare the {capability.__name__} "
                f"capability ({', '.join(capability_methods(capability))})")


def enqueue_claimed(backend: Backend, runner_id: str, *, paused: bool = False,
                    max_attempts: int = 3, headers: Mapping[str, str] | None = None,
                    ) -> Invocation:
    """Enqueue one invocation and claim it for ``runner_id`` (then pause it if asked;
    a test that asks on a backend without the Pausing capability is skipped).

    The claim takes the oldest pending invocation, so call this only while
    nothing else is pending.
    """
    invocation = make_invocation(max_attempts=max_attempts, headers=headers)
    backend.enqueue(invocation)
    claimed = backend.claim(runner_id, EMPTY_CLAIM_TIMEOUT)
    assert claimed is not None, "claim returned None although an invocation was pending"
    assert claimed.id == invocation.id, "claim took another invocation than the only pending one"
    if paused:
        if not isinstance(backend, Pausing):
            skip_undeclared(backend, Pausing)
        backend.pause(claimed.id, runner_id)
        return backend.get(claimed.id)
    return claimed


def end_three_ways(backend: Backend) -> list[Invocation]:
    """Three invocations, as stored once ended: one completed, one failed by its owner,
    one failed by a reroute past its ``max_attempts``, one after the other."""
    completed = enqueue_claimed(backend, "r")
    backend.complete(completed.id, "r", b"1")
    failed = enqueue_claimed(backend, "r")
    backend.fail(failed.id, "r", CRASH)
    enqueue_claimed(backend, "lost", max_attempts=1)
    [lost] = backend.reroute("lost", CRASH)
    ended = [backend.get(i.id) for i in (completed, failed, lost)]
    assert [i.status for i in ended] == [Status.SUCCESS, Status.FAILED, Status.FAILED]
    return ended


def _require_notifications(backend: Backend) -> None:
    if not type(backend).notifies_final:
        pytest.skip(f"{type(backend).__name__} does not announce endings "
                    "(notifies_final is False): its wait_any sleeps and waiters poll")


def claim_until_empty(backend: Backend, runner_id: str,
                      start: threading.Barrier | None = None) -> list[str]:
    """Claim for ``runner_id`` until the queue is empty; the ids in claim order.

    ``start`` lets several threads begin together, so their claims overlap.
    """
    if start is not None:
        start.wait(THREAD_TIMEOUT)
    claimed = []
    while (invocation := backend.claim(runner_id, EMPTY_CLAIM_TIMEOUT)) is not None:
        claimed.append(invocation.id)
    return claimed


def assert_claimed_once_each(claims: dict[str, list[str]], expected: set[str]) -> None:
    """``claims`` (runner -> ids it claimed) hands out every expected id exactly once."""
    every = [invocation_id for ids in claims.values() for invocation_id in ids]
    twice = {i for i in every if every.count(i) > 1}
    assert not twice, f"claimed by more than one runner: {sorted(twice)}"
    assert set(every) == expected, (f"never claimed: {sorted(expected - set(every))}; "
                                    f"unexpected: {sorted(set(every) - expected)}")


class Background(Generic[T]):
    """Runs ``call`` in a daemon thread and hands its outcome to the test thread.

    An exception is kept rather than left to escape the thread, so it fails
    the test that waits for it (re-raised by :meth:`join`) instead of
    surfacing as pytest's unhandled-thread-exception warning elsewhere.
    """

    def __init__(self, call: Callable[[], T], name: str = "contract-thread") -> None:
        self._call = call
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._call()
        except BaseException as exc:
            self._error = exc

    def finished_within(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; whether the call has returned (or raised)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float = THREAD_TIMEOUT) -> T:
        """The call's return value; fails the test if it is still running after ``timeout``."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"{self._thread.name} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


#: Every change only an owner may make (pause and resume need the Pausing capability).
OWNER_OPERATIONS = ("complete", "fail", "pause", "resume")
#: operations that are legal for the owner only once the invocation is PAUSED
NEEDS_PAUSED = frozenset({"resume"})


def owner_change(backend: Backend, operation: str) -> Callable[[str, str], None]:
    """One of :data:`OWNER_OPERATIONS` as a call ``(invocation_id, runner_id)``; the
    test is skipped when it needs a capability ``backend`` does not declare."""
    if operation == "complete":
        return lambda invocation_id, runner: backend.complete(invocation_id, runner, b'"late"')
    if operation == "fail":
        return lambda invocation_id, runner: backend.fail(invocation_id, runner,
                                                          ErrorInfo("E", "late"))
    if not isinstance(backend, Pausing):
        skip_undeclared(backend, Pausing)
    return backend.pause if operation == "pause" else backend.resume


class BackendContract:
    """Contract tests for a :class:`~pprunner.backend.Backend` implementation.

    Subclasses provide the ``backend`` fixture; the tests of each optional
    capability run only if the backend declares it. A backend whose instances
    must not be shared between threads sets :attr:`supports_threads` to False,
    which skips the tests that need a second thread (the built-ins support
    threads, as the Backend docstring asks).
    """

    supports_threads: ClassVar[bool] = True

    @pytest.fixture
    def backend(self) -> Backend:
        pytest.fail(f"{type(self).__name__} must override the `backend` fixture with one "
                    "that yields a fresh, empty backend and closes it afterwards")

    @pytest.fixture
    def pausing(self, backend: Backend) -> Pausing:
        """The backend, for a test of the Pausing capability (skipped without it)."""
        if not isinstance(backend, Pausing):
            skip_undeclared(backend, Pausing)
        return backend

    @pytest.fixture
    def admin(self, backend: Backend) -> Admin:
        """The backend, for a test of the Admin capability (skipped without it)."""
        if not isinstance(backend, Admin):
            skip_undeclared(backend, Admin)
        return backend

    @pytest.fixture
    def recovery(self, backend: Backend) -> Recovery:
        """The backend, for a test of the Recovery capability (skipped without it)."""
        if not isinstance(backend, Recovery):
            skip_undeclared(backend, Recovery)
        return backend

    def _require_threads(self) -> None:
        if not self.supports_threads:
            pytest.skip(f"{type(self).__name__}.supports_threads is False")

    # -- storing and reading ---------------------------------------------------------

    def test_supports_processes_is_a_bool(self, backend: Backend) -> None:
        assert isinstance(type(backend).supports_processes, bool)

    def test_enqueue_then_get_returns_the_same_invocation(self, backend: Backend) -> None:
        invocation = make_invocation(task="tasks.add", max_attempts=5,
                                     payload=b'{"args":[1,2],"kwargs":{}}', serializer="pickle")
        backend.enqueue(invocation)
        assert backend.get(invocation.id) == invocation

    def test_headers_are_stored_and_claimed_as_enqueued(self, backend: Backend) -> None:
        plain = enqueue_claimed(backend, "r")
        assert plain.headers == backend.get(plain.id).headers == {}
        claimed = enqueue_claimed(backend, "r", headers=HEADERS)
        assert claimed.headers == HEADERS
        assert backend.get(claimed.id) == claimed

    def test_a_blocked_claim_gets_the_headers_of_what_is_enqueued_meanwhile(
            self, backend: Backend) -> None:
        """The hand-over to a waiting claimer (a Redis inbox) carries them as well."""
        self._require_threads()
        claimer = Background(lambda: backend.claim("waiting", THREAD_TIMEOUT), name="claimer")
        backend.enqueue(invocation := make_invocation(headers=HEADERS))
        claimed = claimer.join()
        assert claimed is not None and (claimed.id, claimed.headers) == (invocation.id, HEADERS)

    def test_headers_are_kept_through_retries_reroutes_and_the_next_claim(
            self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "r", headers=HEADERS)
        backend.retry(claimed.id, "r", CRASH, not_before=time.time() - 1)
        again = backend.claim("r", EMPTY_CLAIM_TIMEOUT)
        assert again is not None and (again.attempts, again.headers) == (2, HEADERS)
        assert backend.reroute("r", CRASH)[0].headers == HEADERS  # the worker died
        assert backend.get(claimed.id).headers == HEADERS
        third = backend.claim("r", EMPTY_CLAIM_TIMEOUT)
        assert third is not None and third.headers == HEADERS
        backend.enqueue(other := make_invocation(headers={"traceparent": "other"}))
        following = backend.complete_and_claim(claimed.id, "r", b"1")
        assert following is not None and following.headers == {"traceparent": "other"}
        assert following.id == other.id and backend.get(claimed.id).headers == HEADERS

    def test_get_of_an_unknown_id_raises_unknown_invocation(self, backend: Backend) -> None:
        with pytest.raises(UnknownInvocation) as raised:
            backend.get(new_invocation_id())
        assert isinstance(raised.value, KeyError)

    def test_a_fresh_backend_counts_zero_in_every_status(self, backend: Backend) -> None:
        assert backend.counts() == dict.fromkeys(Status, 0)

    # -- claiming --------------------------------------------------------------------

    def test_claim_on_an_empty_queue_returns_none_after_the_timeout(
            self, backend: Backend) -> None:
        started = time.monotonic()
        assert backend.claim("idle", EMPTY_CLAIM_TIMEOUT) is None
        assert time.monotonic() - started < EMPTY_CLAIM_TIMEOUT + SLACK

    def test_claim_takes_the_oldest_pending_invocation_first(self, backend: Backend) -> None:
        invocations = [make_invocation(task=f"t{n}") for n in range(3)]
        for invocation in invocations:
            backend.enqueue(invocation)
        claimed = [backend.claim("r", EMPTY_CLAIM_TIMEOUT) for _ in invocations]
        assert [c.id if c else None for c in claimed] == [i.id for i in invocations]

    def test_reroute_without_retry_fails_even_with_attempts_left(self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "killed", max_attempts=5)
        (after,) = backend.reroute("killed", CRASH, retry=False)
        assert (after.status, after.error) == (Status.FAILED, CRASH)
        assert backend.get(claimed.id) == after

    def test_a_rerouted_invocation_keeps_its_place_in_the_queue(self, backend: Backend) -> None:
        first = enqueue_claimed(backend, "dead")
        later = make_invocation()
        backend.enqueue(later)
        backend.reroute("dead", CRASH)
        again = backend.claim("heir", EMPTY_CLAIM_TIMEOUT)
        assert again is not None and again.id == first.id, (
            "a rerouted invocation must be claimed before those enqueued after it")

    def test_claim_makes_the_invocation_running_for_its_runner(self, backend: Backend) -> None:
        invocation = make_invocation()
        backend.enqueue(invocation)
        before = time.time()
        claimed = backend.claim("runner-1", EMPTY_CLAIM_TIMEOUT)
        after = time.time()
        assert claimed is not None
        assert claimed.status is Status.RUNNING
        assert claimed.owner == "runner-1"
        assert claimed.attempts == invocation.attempts + 1
        assert claimed.started_at is not None
        assert before <= claimed.started_at <= after
        assert backend.get(invocation.id) == claimed, "claim returned other values than it stored"

    def test_two_claims_never_return_the_same_invocation(self, backend: Backend) -> None:
        first, second = make_invocation(), make_invocation()
        backend.enqueue(first)
        backend.enqueue(second)
        claims = {runner: claim_until_empty(backend, runner) for runner in ("r1", "r2")}
        assert_claimed_once_each(claims, {first.id, second.id})
        assert backend.claim("r3", EMPTY_CLAIM_TIMEOUT) is None

    def test_concurrent_claims_hand_out_every_invocation_once(self, backend: Backend) -> None:
        self._require_threads()
        invocations = [make_invocation() for _ in range(40)]
        for invocation in invocations:
            backend.enqueue(invocation)
        runners = [f"claimer-{n}" for n in range(4)]
        start = threading.Barrier(len(runners))
        threads = {runner: Background(functools.partial(claim_until_empty, backend, runner, start),
                                      name=runner) for runner in runners}
        claims = {runner: thread.join() for runner, thread in threads.items()}
        assert_claimed_once_each(claims, {i.id for i in invocations})
        for runner, ids in claims.items():
            assert {i.id for i in backend.owned_by([runner])} == set(ids), runner

    # -- finishing, pausing, ownership -------------------------------------------------

    def test_complete_by_the_owner_stores_the_result(self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "owner")
        before = time.time()
        backend.complete(claimed.id, "owner", b'{"sum":3}')
        stored = backend.get(claimed.id)
        assert stored.status is Status.SUCCESS
        assert stored.result == b'{"sum":3}'
        assert stored.finished_at is not None
        assert before <= stored.finished_at <= time.time()

    def test_fail_by_the_owner_stores_the_error(self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "owner")
        error = ErrorInfo("ValueError", "bad input: ünïcode",
                          "Traceback (most recent call last):\n")
        backend.fail(claimed.id, "owner", error)
        stored = backend.get(claimed.id)
        assert stored.status is Status.FAILED
        assert stored.error == error
        assert stored.finished_at is not None

    @pytest.mark.parametrize("operation", OWNER_OPERATIONS)
    def test_only_the_owner_may_change_an_invocation(self, backend: Backend,
                                                     operation: str) -> None:
        change = owner_change(backend, operation)
        claimed = enqueue_claimed(backend, "owner", paused=operation in NEEDS_PAUSED)
        with pytest.raises(NotOwner):
            change(claimed.id, "intruder")
        assert backend.get(claimed.id) == claimed, "a refused change altered the invocation"

    @pytest.mark.parametrize("operation", OWNER_OPERATIONS)
    def test_a_pending_invocation_cannot_be_changed(self, backend: Backend,
                                                    operation: str) -> None:
        change = owner_change(backend, operation)
        invocation = make_invocation()
        backend.enqueue(invocation)
        with pytest.raises(IllegalTransition):
            change(invocation.id, "anyone")
        assert backend.get(invocation.id) == invocation

    @pytest.mark.parametrize("operation", OWNER_OPERATIONS)
    def test_a_completed_invocation_cannot_be_changed_again(self, backend: Backend,
                                                            operation: str) -> None:
        change = owner_change(backend, operation)
        claimed = enqueue_claimed(backend, "owner")
        backend.complete(claimed.id, "owner", b"1")
        done = backend.get(claimed.id)
        with pytest.raises(IllegalTransition):
            change(claimed.id, "owner")
        assert backend.get(claimed.id) == done

    def test_pause_keeps_the_owner_and_resume_runs_again(self, pausing: Pausing) -> None:
        claimed = enqueue_claimed(pausing, "owner")
        pausing.pause(claimed.id, "owner")
        paused = pausing.get(claimed.id)
        assert (paused.status, paused.owner) == (Status.PAUSED, "owner")
        pausing.resume(claimed.id, "owner")
        resumed = pausing.get(claimed.id)
        assert (resumed.status, resumed.owner) == (Status.RUNNING, "owner")
        assert resumed.attempts == claimed.attempts, "pause and resume are not a new attempt"

    @pytest.mark.parametrize(("paused", "operation"), [
        pytest.param(True, "pause", id="pause-paused"),
        pytest.param(True, "complete", id="complete-paused"),
        pytest.param(False, "resume", id="resume-running"),
    ])
    def test_the_owner_cannot_skip_the_state_machine(self, pausing: Pausing, paused: bool,
                                                     operation: str) -> None:
        claimed = enqueue_claimed(pausing, "owner", paused=paused)
        with pytest.raises(IllegalTransition):
            owner_change(pausing, operation)(claimed.id, "owner")
        assert pausing.get(claimed.id) == claimed

    # -- rerouting ---------------------------------------------------------------------

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_reroute_after_a_crash_requeues_with_the_error(self, backend: Backend,
                                                          paused: bool) -> None:
        claimed = enqueue_claimed(backend, "dead", paused=paused, max_attempts=3)
        rerouted = backend.reroute("dead", CRASH)
        stored = backend.get(claimed.id)
        assert rerouted == [stored], "reroute must return the invocations as stored afterwards"
        assert (stored.status, stored.owner, stored.error) == (Status.PENDING, None, CRASH)
        assert stored.attempts == 1, "the interrupted attempt counts"
        again = backend.claim("heir", EMPTY_CLAIM_TIMEOUT)
        assert again is not None and again.id == claimed.id
        assert (again.owner, again.attempts) == ("heir", 2)

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_reroute_after_a_crash_fails_when_attempts_are_used_up(
            self, backend: Backend, paused: bool) -> None:
        claimed = enqueue_claimed(backend, "dead", paused=paused, max_attempts=1)
        rerouted = backend.reroute("dead", CRASH)
        stored = backend.get(claimed.id)
        assert rerouted == [stored]
        assert stored.status is Status.FAILED
        assert stored.finished_at is not None
        assert stored.error is not None and stored.error.type == CRASH.type
        assert CRASH.message in stored.error.message
        assert "max_attempts" in stored.error.message
        assert backend.claim("heir", EMPTY_CLAIM_TIMEOUT) is None, "a FAILED one was requeued"

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_graceful_reroute_gives_the_attempt_back(self, backend: Backend,
                                                     paused: bool) -> None:
        claimed = enqueue_claimed(backend, "leaving", paused=paused)
        rerouted = backend.reroute("leaving", None)
        stored = backend.get(claimed.id)
        assert rerouted == [stored]
        assert (stored.status, stored.owner, stored.attempts) == (Status.PENDING, None, 0)
        again = backend.claim("heir", EMPTY_CLAIM_TIMEOUT)
        assert again is not None and (again.id, again.attempts) == (claimed.id, 1)

    def test_reroute_of_a_runner_that_owns_nothing_returns_nothing(
            self, backend: Backend) -> None:
        backend.enqueue(make_invocation())
        assert backend.reroute("nobody", CRASH) == []
        assert backend.counts()[Status.PENDING] == 1

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_reroute_leaves_other_runners_invocations_alone(self, backend: Backend,
                                                            paused: bool) -> None:
        mine = enqueue_claimed(backend, "dead")
        theirs = enqueue_claimed(backend, "alive", paused=paused)
        rerouted = backend.reroute("dead", CRASH)
        assert [i.id for i in rerouted] == [mine.id]
        assert backend.get(theirs.id) == theirs

    @pytest.mark.parametrize("error", [pytest.param(None, id="graceful"),
                                       pytest.param(CRASH, id="crash")])
    def test_a_late_result_after_reroute_is_refused(self, backend: Backend,
                                                    error: ErrorInfo | None) -> None:
        claimed = enqueue_claimed(backend, "old")
        backend.reroute("old", error)
        requeued = backend.get(claimed.id)
        with pytest.raises(NotOwner):
            backend.complete(claimed.id, "old", b'"late"')
        assert backend.get(claimed.id) == requeued

        heir = backend.claim("new", EMPTY_CLAIM_TIMEOUT)
        assert heir is not None and heir.id == claimed.id
        with pytest.raises(NotOwner):
            backend.complete(claimed.id, "old", b'"late"')
        assert backend.get(claimed.id) == heir
        backend.complete(claimed.id, "new", b'"on time"')
        assert backend.get(claimed.id).result == b'"on time"'

    # -- ownership queries ---------------------------------------------------------------

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_owned_by_lists_running_and_paused_invocations_of_those_runners(
            self, backend: Backend, paused: bool) -> None:
        held = enqueue_claimed(backend, "a", paused=paused)
        finished = enqueue_claimed(backend, "a")
        backend.complete(finished.id, "a", b"1")
        failed = enqueue_claimed(backend, "a")
        backend.fail(failed.id, "a", CRASH)
        other = enqueue_claimed(backend, "b")
        backend.enqueue(make_invocation())

        def owned(*runners: str) -> dict[str, Invocation]:
            return {i.id: i for i in backend.owned_by(runners)}

        assert owned("a") == {held.id: held}
        assert owned("a", "b") == {i.id: i for i in (held, other)}
        assert owned("c") == {}

    def test_owned_by_no_runners_is_empty(self, backend: Backend) -> None:
        enqueue_claimed(backend, "a")
        assert backend.owned_by([]) == []

    # -- runners and heartbeats ----------------------------------------------------------

    def test_record_heartbeats_stores_the_given_time(self, admin: Admin) -> None:
        """On the store's clock, if it has one: then ``at`` is moved by the offset
        between the clocks and the time in transit (see Backend.record_heartbeats)."""
        runner = make_runner("w1")
        admin.record_heartbeats([runner], at=1_234.5)
        [stored] = admin.runners()
        assert stored == attrs.evolve(runner, heartbeat_at=stored.heartbeat_at)
        assert stored.heartbeat_at == pytest.approx(1_234.5, abs=CLOCK_TOLERANCE)

    def test_record_heartbeats_again_refreshes_the_heartbeat(self, admin: Admin) -> None:
        runner = make_runner("w1")
        admin.record_heartbeats([runner], at=1_000.0)
        admin.record_heartbeats([runner], at=2_000.0)
        [(runner_id, beat)] = [(r.id, r.heartbeat_at) for r in admin.runners()]
        assert (runner_id, beat) == ("w1", pytest.approx(2_000.0, abs=CLOCK_TOLERANCE))

    def test_every_heartbeat_records_the_runner_s_phase(self, admin: Admin) -> None:
        """What ``pprunner top`` shows as booting or retiring, wherever the worker runs."""
        runner = attrs.evolve(make_runner("w1"), phase="booting")
        admin.record_heartbeats([runner, make_runner("w2", 2_000.0)], at=time.time())
        admin.record_heartbeats([attrs.evolve(runner, phase="retiring")], at=time.time())
        assert [(r.id, r.phase) for r in admin.runners()] == [("w1", "retiring"), ("w2", "")]

    def test_runners_are_listed_oldest_first(self, admin: Admin) -> None:
        admin.record_heartbeats([make_runner("young", started_at=2_000.0),
                                 make_runner("old", started_at=1_000.0)], at=time.time())
        assert [r.id for r in admin.runners()] == ["old", "young"]

    def test_stale_runners_are_those_with_an_old_heartbeat(self, recovery: Recovery) -> None:
        now = time.time()
        recovery.record_heartbeats([make_runner("fresh")], at=now)
        recovery.record_heartbeats([make_runner("silent")], at=now - 3_600)
        assert [r.id for r in recovery.stale_runners(older_than=60)] == ["silent"]
        assert recovery.stale_runners(older_than=1e6) == []

    def test_forget_runners_removes_them(self, admin: Admin) -> None:
        admin.record_heartbeats([make_runner("gone"), make_runner("kept", 2_000.0)],
                                at=time.time())
        admin.forget_runners(["gone", "never-recorded"])
        assert [r.id for r in admin.runners()] == ["kept"]

    # -- retries and the dead letters ---------------------------------------------------

    def test_retry_requeues_for_later_keeping_attempts_and_history(
            self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "r")
        backend.retry(claimed.id, "r", CRASH, not_before=time.time() + 3_600)
        stored = backend.get(claimed.id)
        assert (stored.status, stored.owner, stored.attempts) == (Status.PENDING, None, 1)
        assert stored.error == CRASH and stored.history == (CRASH,)
        assert backend.claim("r", EMPTY_CLAIM_TIMEOUT) is None, "claimed before not_before"

    def test_a_due_retry_is_claimed_again(self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "r")
        backend.retry(claimed.id, "r", CRASH, not_before=time.time() - 1)
        again = backend.claim("r2", EMPTY_CLAIM_TIMEOUT)
        assert again is not None and (again.id, again.attempts) == (claimed.id, 2)

    def test_only_the_owner_may_retry(self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "r")
        with pytest.raises(NotOwner):
            backend.retry(claimed.id, "other", CRASH, not_before=0)

    def test_every_failed_attempt_joins_the_history(self, backend: Backend) -> None:
        second = ErrorInfo("ValueError", "second")
        claimed = enqueue_claimed(backend, "r", max_attempts=3)
        backend.reroute("r", CRASH)
        backend.claim("r", EMPTY_CLAIM_TIMEOUT)
        backend.fail(claimed.id, "r", second)
        assert backend.get(claimed.id).history == (CRASH, second)

    def test_requeue_puts_failed_invocations_back_with_fresh_attempts(
            self, admin: Admin) -> None:
        failed = enqueue_claimed(admin, "r")
        admin.fail(failed.id, "r", CRASH)
        done = enqueue_claimed(admin, "r")
        admin.complete(done.id, "r", b"1")
        (requeued,) = admin.requeue([failed.id, done.id, "unknown"])
        assert requeued == admin.get(failed.id)
        assert (requeued.status, requeued.attempts, requeued.owner) == (Status.PENDING, 0, None)
        assert requeued.history == (CRASH,)
        assert admin.get(done.id).status is Status.SUCCESS
        assert requeued.headers == failed.headers == {}
        assert admin.claim("r", EMPTY_CLAIM_TIMEOUT).id == failed.id  # type: ignore[union-attr]

    def test_requeue_keeps_the_headers(self, admin: Admin) -> None:
        failed = enqueue_claimed(admin, "r", headers=HEADERS)
        admin.fail(failed.id, "r", CRASH)
        (requeued,) = admin.requeue([failed.id])
        assert requeued.headers == admin.get(failed.id).headers == HEADERS

    def test_requeue_all_takes_every_failed_one(self, admin: Admin) -> None:
        for _ in range(3):
            admin.fail(enqueue_claimed(admin, "r").id, "r", CRASH)
        assert len(admin.requeue(None)) == 3
        assert admin.counts()[Status.FAILED] == 0

    def test_invocations_lists_one_status_newest_first(self, admin: Admin) -> None:
        ids = []
        for _ in range(3):
            ids.append(enqueue_claimed(admin, "r").id)
            admin.fail(ids[-1], "r", CRASH)
        admin.enqueue(make_invocation())
        assert [i.id for i in admin.invocations(Status.FAILED, 2)] == ids[::-1][:2]

    def test_pending_ones_are_listed_and_counted_waiting_retries_included(
            self, admin: Admin) -> None:
        retried = enqueue_claimed(admin, "r")
        admin.retry(retried.id, "r", CRASH, time.time() + 3_600)
        queued = [make_invocation() for _ in range(3)]
        for invocation in queued:
            admin.enqueue(invocation)
        admin.claim("r", 0)  # the oldest queued one
        assert admin.counts()[Status.PENDING] == 3
        listed = [i.id for i in admin.invocations(Status.PENDING, 10)]
        assert listed == [queued[2].id, queued[1].id, retried.id]
        assert [i.id for i in admin.invocations(Status.PENDING, 1)] == [queued[2].id]

    # -- recent endings (pprunner top) --------------------------------------------------

    def test_ended_since_counts_what_ended_from_then_on_by_status(self, admin: Admin) -> None:
        _, failed, lost = end_three_ways(admin)
        last = enqueue_claimed(admin, "r")
        admin.complete(last.id, "r", b"2")
        enqueue_claimed(admin, "r")  # running: not ended
        admin.enqueue(make_invocation())  # pending: not ended
        assert admin.ended_since(0.0) == {Status.SUCCESS: 2, Status.FAILED: 2}
        since = admin.get(lost.id).finished_at
        assert since is not None
        assert admin.ended_since(since) == {Status.SUCCESS: 1, Status.FAILED: 1}
        assert admin.ended_since(time.time() + 3_600) == {Status.SUCCESS: 0, Status.FAILED: 0}
        admin.requeue([failed.id])  # no longer ended
        assert admin.ended_since(0.0) == {Status.SUCCESS: 2, Status.FAILED: 1}
        admin.purge(time.time() + 3_600, 10)
        assert admin.ended_since(0.0) == {Status.SUCCESS: 0, Status.FAILED: 0}

    def test_latest_failures_come_the_last_to_fail_first(self, admin: Admin) -> None:
        older = enqueue_claimed(admin, "a")
        newer = enqueue_claimed(admin, "b")
        admin.fail(newer.id, "b", CRASH)
        admin.fail(older.id, "a", CRASH)  # enqueued first, failed last
        admin.complete(enqueue_claimed(admin, "c").id, "c", b"1")
        lost = enqueue_claimed(admin, "lost", max_attempts=1)
        admin.reroute("lost", CRASH)  # past max_attempts: FAILED
        assert [i.id for i in admin.latest_failures(10)] == [lost.id, older.id, newer.id]
        assert admin.latest_failures(1) == [admin.get(lost.id)]
        admin.requeue([older.id])
        assert [i.id for i in admin.latest_failures(10)] == [lost.id, newer.id]
        admin.purge(time.time() + 3_600, 10)
        assert admin.latest_failures(10) == []

    # -- completing and claiming the next at once ----------------------------------------

    def test_complete_and_claim_takes_the_next_pending_one(self, backend: Backend) -> None:
        first = enqueue_claimed(backend, "r")
        waiting = make_invocation()
        backend.enqueue(waiting)
        claimed = backend.complete_and_claim(first.id, "r", b"done")
        assert backend.get(first.id).status is Status.SUCCESS
        assert backend.get(first.id).result == b"done"
        assert claimed is not None and (claimed.id, claimed.owner) == (waiting.id, "r")
        assert claimed == backend.get(waiting.id)
        assert backend.complete_and_claim(waiting.id, "r", b"2") is None  # nothing left

    def test_complete_and_claim_by_a_non_owner_is_refused_and_claims_nothing(
            self, backend: Backend) -> None:
        first = enqueue_claimed(backend, "r")
        backend.enqueue(make_invocation())
        with pytest.raises(NotOwner):
            backend.complete_and_claim(first.id, "intruder", b"x")
        assert backend.counts()[Status.PENDING] == 1
        assert backend.owned_by(["intruder"]) == []

    # -- waiting ---------------------------------------------------------------------------

    def test_pause_records_what_it_waits_for_and_resume_clears_it(
            self, pausing: Pausing) -> None:
        claimed = enqueue_claimed(pausing, "r")
        pausing.pause(claimed.id, "r", ["a", "b"])
        assert pausing.get(claimed.id).waiting_for == ("a", "b")
        pausing.resume(claimed.id, "r")
        assert pausing.get(claimed.id).waiting_for == ()

    def test_claim_one_of_takes_only_the_named_pending_ones(self, pausing: Pausing) -> None:
        first, wanted, last = (make_invocation() for _ in range(3))
        for invocation in (first, wanted, last):
            pausing.enqueue(invocation)
        claimed = pausing.claim_one_of("r", [wanted.id, "unknown"])
        assert claimed is not None and (claimed.id, claimed.owner) == (wanted.id, "r")
        assert claimed.attempts == 1 and claimed.status is Status.RUNNING
        assert pausing.claim_one_of("r", [wanted.id]) is None  # not pending any more
        assert pausing.claim_one_of("r", []) is None
        assert pausing.get(first.id).status is Status.PENDING

    def test_claim_one_of_respects_not_before(self, pausing: Pausing) -> None:
        claimed = enqueue_claimed(pausing, "r")
        pausing.retry(claimed.id, "r", CRASH, not_before=time.time() + 3_600)
        assert pausing.claim_one_of("r", [claimed.id]) is None

    # -- recovering a lost runner -------------------------------------------------------

    def test_recover_takes_back_what_a_silent_runner_held(self, recovery: Recovery) -> None:
        claimed = enqueue_claimed(recovery, "lost")
        recovery.record_heartbeats([make_runner("lost")], at=time.time() - 3_600)
        recovered = recovery.recover("lost", 60, CRASH)
        assert recovered == [recovery.get(claimed.id)]
        assert (recovered[0].status, recovered[0].owner) == (Status.PENDING, None)
        assert recovery.stale_runners(older_than=60) == [], "a recovered runner is forgotten"
        with pytest.raises(NotOwner):  # its late result is refused
            recovery.complete(claimed.id, "lost", b"late")

    def test_recover_leaves_a_runner_whose_heartbeat_came_back(self, recovery: Recovery) -> None:
        claimed = enqueue_claimed(recovery, "slow")
        recovery.record_heartbeats([make_runner("slow")], at=time.time() - 3_600)
        recovery.record_heartbeats([make_runner("slow")], at=time.time())
        assert recovery.recover("slow", 60, CRASH) is None
        assert recovery.get(claimed.id).owner == "slow"

    def test_recover_of_an_unknown_runner_does_nothing(self, recovery: Recovery) -> None:
        assert recovery.recover("never-seen", 60, CRASH) is None

    def test_only_one_of_several_recoverers_acts(self, recovery: Recovery) -> None:
        self._require_threads()
        claimed = enqueue_claimed(recovery, "lost")
        recovery.record_heartbeats([make_runner("lost")], at=time.time() - 3_600)
        start = threading.Barrier(4)

        def recover() -> list[Invocation] | None:
            start.wait(THREAD_TIMEOUT)
            return recovery.recover("lost", 60, CRASH)

        threads = [Background(recover) for _ in range(4)]
        answers = [thread.join() for thread in threads]
        assert sum(answer is not None for answer in answers) == 1
        assert recovery.get(claimed.id).history == (CRASH,)

    # -- purging finished invocations ------------------------------------------------------

    def test_purge_deletes_finished_invocations_oldest_first_up_to_its_limit(
            self, admin: Admin) -> None:
        ended = end_three_ways(admin)
        lost = ended[2]
        later = max(i.finished_at or 0 for i in ended) + 1
        assert admin.purge(later, 2) == 2
        for gone in ended[:2]:
            with pytest.raises(UnknownInvocation):
                admin.get(gone.id)
        assert admin.get(lost.id).status is Status.FAILED
        assert admin.counts()[Status.SUCCESS] == 0 and admin.counts()[Status.FAILED] == 1
        assert admin.invocations(Status.FAILED, 10) == [admin.get(lost.id)]
        assert admin.purge(later, 10) == 1
        assert admin.purge(later, 10) == 0

    @pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
    def test_purge_keeps_what_is_unfinished_or_finished_since_the_cutoff(
            self, admin: Admin, paused: bool) -> None:
        held = enqueue_claimed(admin, "r", paused=paused)
        requeued = enqueue_claimed(admin, "q")
        admin.fail(requeued.id, "q", CRASH)
        finished = enqueue_claimed(admin, "f")
        admin.complete(finished.id, "f", b"1")
        admin.requeue([requeued.id])  # no longer finished
        admin.enqueue(pending := make_invocation())
        finished_at = admin.get(finished.id).finished_at
        assert finished_at is not None
        assert admin.purge(finished_at, 10) == 0  # finished at the cutoff, not before it
        assert admin.purge(time.time() + 3_600, 10) == 1
        with pytest.raises(UnknownInvocation):
            admin.get(finished.id)
        assert [admin.get(i.id) for i in (held, pending)] == [held, pending]
        assert admin.get(requeued.id).status is Status.PENDING

    # -- counts ----------------------------------------------------------------------------

    @pytest.mark.parametrize("held", [Status.RUNNING, Status.PAUSED], ids=str)
    def test_counts_follow_the_statuses(self, backend: Backend, held: Status) -> None:
        backend.complete(enqueue_claimed(backend, "r").id, "r", b"1")
        backend.fail(enqueue_claimed(backend, "r").id, "r", CRASH)
        enqueue_claimed(backend, "r", paused=held is Status.PAUSED)
        for _ in range(2):
            backend.enqueue(make_invocation())
        assert backend.counts() == {**dict.fromkeys(Status, 0), Status.PENDING: 2, held: 1,
                                    Status.SUCCESS: 1, Status.FAILED: 1}

    # -- waiting and waking ----------------------------------------------------------------

    def test_wait_returns_the_invocation_completed_by_another_thread(
            self, backend: Backend) -> None:
        self._require_threads()
        claimed = enqueue_claimed(backend, "owner")
        finisher = Background(lambda: backend.complete(claimed.id, "owner", b'"done"'))
        final = backend.wait(claimed.id, timeout=5)
        finisher.join()
        assert (final.status, final.result) == (Status.SUCCESS, b'"done"')

    def test_wait_returns_the_unfinished_invocation_when_the_timeout_runs_out(
            self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "owner")
        started = time.monotonic()
        unfinished = backend.wait(claimed.id, timeout=EMPTY_CLAIM_TIMEOUT)
        assert time.monotonic() - started < EMPTY_CLAIM_TIMEOUT + SLACK
        assert (unfinished.id, unfinished.status) == (claimed.id, Status.RUNNING)

    def test_wait_any_returns_by_its_timeout(self, backend: Backend) -> None:
        claimed = enqueue_claimed(backend, "owner")
        started = time.monotonic()
        backend.wait_any([claimed.id], EMPTY_CLAIM_TIMEOUT)
        assert time.monotonic() - started < EMPTY_CLAIM_TIMEOUT + SLACK
        assert backend.get(claimed.id).status is Status.RUNNING

    def test_wait_any_on_a_store_that_notifies_blocks_while_nothing_ends(
            self, backend: Backend) -> None:
        _require_notifications(backend)
        claimed = enqueue_claimed(backend, "owner")
        started = time.monotonic()
        backend.wait_any([claimed.id], NOTIFIED_BLOCK)
        assert time.monotonic() - started >= NOTIFIED_BLOCK * 0.9

    @pytest.mark.parametrize("ending", ["complete", "fail", "reroute past max_attempts"])
    def test_wait_any_on_a_store_that_notifies_returns_when_one_ends(
            self, backend: Backend, ending: str) -> None:
        self._require_threads()
        _require_notifications(backend)
        waited = enqueue_claimed(backend, "owner", max_attempts=1)
        other = enqueue_claimed(backend, "other")

        def wait() -> float:
            started = time.monotonic()
            backend.wait_any([other.id, waited.id], THREAD_TIMEOUT)
            return time.monotonic() - started

        waiter = Background(wait)
        if ending == "complete":
            backend.complete(waited.id, "owner", b"1")
        elif ending == "fail":
            backend.fail(waited.id, "owner", CRASH)
        else:
            backend.reroute("owner", CRASH)
        assert waiter.join() < SLACK, "wait_any slept on although one of its invocations ended"
        assert backend.get(waited.id).status.is_final

    def test_wait_any_returns_at_once_for_an_unknown_invocation(self, backend: Backend) -> None:
        _require_notifications(backend)
        started = time.monotonic()
        backend.wait_any(["no-such-invocation"], THREAD_TIMEOUT)
        assert time.monotonic() - started < SLACK

    def test_wakeup_releases_a_blocked_claim(self, backend: Backend) -> None:
        """Part of the contract: shutdown calls wakeup() so idle workers stop at once.

        wakeup() is repeated until the claim returns, since the first call may
        come before the claimer has started to block and so wake nobody.
        """
        self._require_threads()
        claimer = Background(lambda: backend.claim("idle", timeout=30), name="claimer")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            backend.wakeup()
            if claimer.finished_within(0.05):
                break
        assert claimer.finished_within(0), "claim(timeout=30) still blocked 5 s into wakeup()"
        assert claimer.join() is None
