"""The parent's side: claim in each ready worker's name, hand over, take back.

One thread of the runner's process (:class:`Feeder`) asks pynenc's
orchestrator for an invocation *in the name of* each idle, booted worker
(``get_invocations_to_run(1, that worker's context)``: pynenc's blocking
control, concurrency control and ownership apply as for any runner), and
hands it to exactly that worker (``Call(runner_id=...)``). It then hears
what became of it from pprunner's dispatcher and, when a worker died or
ran out of time, takes back through :mod:`.recovery` everything that
worker held — the invocation it was handed and any it claimed while that
one waited (their ``Noted`` events) — at once.

When the broker is empty it backs off (doubling up to
``pprunner_idle_poll_max``); only this thread polls, and idle workers
block on their pipes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import threading
from typing import TYPE_CHECKING, Any

import attrs
from pynenc import context as pynenc_context
from pynenc.runner.runner_context import RunnerContext

import pprunner
from pprunner.dispatch import Dispatcher
from pprunner.errors import TimeLimitExceeded, WorkerLost
from pprunner.invocation import RunnerInfo
from pprunner.jobs import (
    Call,
    Cancelled,
    Event,
    Failed,
    Finished,
    Lost,
    Noted,
    Started,
    TimedOut,
)

from . import child, recovery

if TYPE_CHECKING:
    from pprunner.config import Config

logger = logging.getLogger("pprunner.pynenc")

#: first pause after an empty claim; it doubles up to pprunner_idle_poll_max
POLL_MIN = 0.002


@attrs.define
class Slot:
    """A booted worker as the feeder sees it."""

    info: RunnerInfo
    ctx: RunnerContext
    #: the call it was handed and the invocation in it
    call: Call | None = None
    #: invocation ids it holds in pynenc's name: the handed one, then nested ones
    held: list[str] = attrs.Factory(list)
    gone: bool = False

    @property
    def who(self) -> str:
        return f"worker {self.info.id} (pid {self.info.pid})"


class Feeder:
    """Feeds a pprunner supervisor from pynenc's orchestrator (module docstring)."""

    def __init__(self, runner: Any, dispatcher: Dispatcher, config: Config,
                 idle_poll_max: float) -> None:
        self.runner = runner
        self.app = runner.app
        self.dispatcher = dispatcher
        self.config = config
        self.idle_poll_max = idle_poll_max
        self.slots: dict[str, Slot] = {}
        #: deaths under each invocation, for pprunner_max_attempts
        self.deaths: collections.Counter[str] = collections.Counter()
        self._arrived: collections.deque[RunnerInfo] = collections.deque()
        self._departed: collections.deque[str] = collections.deque()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self.stopping = False
        #: set when the runner stops: running invocations are KILLED and REROUTED
        self.killing = False
        self.error: BaseException | None = None
        #: invocations a failed store call left to take back: (id, owner), retried
        self._unsettled: list[tuple[str, RunnerContext]] = []
        self._thread = threading.Thread(target=self._serve, name="pprunner-pynenc-feeder",
                                        daemon=True)

    # -- supervisor-side hooks (its loop thread): queue and wake -------------------

    @pprunner.hookimpl
    def pprunner_worker_ready(self, runner: RunnerInfo) -> None:
        self._arrived.append(runner)
        self.wake()

    @pprunner.hookimpl
    def pprunner_worker_exited(self, runner: RunnerInfo) -> None:
        self._departed.append(runner.id)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    # -- control (the runner's thread) ------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming and wait for the thread; events are drained by :meth:`settle`."""
        self.stopping = True
        self.wake()
        if self._thread.is_alive():
            self._thread.join()

    def settle(self, kill: bool) -> None:
        """After the supervisor stopped: take back what is still held (KILLED and
        REROUTED when ``kill``, pynenc's stop contract), then close."""
        self.killing = kill
        self.dispatcher.drain()
        for slot in self.slots.values():
            self._take_back(slot, killed=True)
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the feeding thread ------------------------------------------------------------

    def _serve(self) -> None:
        pynenc_context.set_runner_context(self.app.app_id, self.runner.runner_context)
        pause = POLL_MIN
        try:
            while not self.stopping:
                self._take_news()
                self.dispatcher.drain()
                self._settle_leftovers()
                free = [s for s in self.slots.values() if s.call is None and not s.gone]
                claimed = self._claim_for(free)
                if claimed:
                    pause = POLL_MIN
                timeout = 0.0 if claimed else (pause if free else 1.0)
                if free and not claimed:
                    pause = min(pause * 2, self.idle_poll_max)
                ready, _, _ = select.select([self.dispatcher.fileno(), self._wake_read], [], [],
                                            timeout)
                if self._wake_read in ready:
                    os.read(self._wake_read, 4096)
        except BaseException as exc:
            logger.exception("the pynenc feeder stopped: %s", exc)
            self.error = exc
            raise

    def _take_news(self) -> None:
        while self._arrived:
            info = self._arrived.popleft()
            ctx = RunnerContext(runner_cls=child.WORKER_CLS, runner_id=info.id,
                                parent_ctx=self.runner.runner_context, pid=info.pid or 0)
            self.slots[info.id] = Slot(info, ctx)
        while self._departed:
            slot = self.slots.get(self._departed.popleft())
            if slot is not None:
                slot.gone = True
                self._forget_if_done(slot)

    def _settle_leftovers(self) -> None:
        left, self._unsettled = self._unsettled, []
        for invocation_id, owner in left:
            try:
                recovery.after_death(self.runner, invocation_id, owner)
            except Exception as exc:
                logger.warning("invocation:%s still not taken back: %s", invocation_id, exc)
                self._unsettled.append((invocation_id, owner))

    def _claim_for(self, free: list[Slot]) -> int:
        claimed = 0
        for slot in free:
            invocations = list(self.app.orchestrator.get_invocations_to_run(1, slot.ctx))
            if not invocations:
                break
            invocation = invocations[0]
            slot.call = Call(child.run_invocation, (invocation,), runner_id=slot.info.id,
                             time_limit=self.config.time_limit,
                             soft_time_limit=self.config.soft_time_limit,
                             name=f"{invocation.task.task_id.key} {invocation.invocation_id}",
                             task_name=invocation.task.task_id.key)
            slot.held = [invocation.invocation_id]
            self.dispatcher.submit(slot.call, self._on_event)
            claimed += 1
        return claimed

    # -- events (delivered on this thread, or on the runner's by settle) ----------------

    def _on_event(self, event: Event) -> None:
        slot = self.slots.get(event.call.runner_id or "")
        if slot is None or slot.call is None or slot.call.id != event.call.id or \
                isinstance(event, Started):
            return
        if isinstance(event, Noted):
            verb, invocation_id = event.data
            if verb == "took":
                slot.held.append(invocation_id)
            elif invocation_id in slot.held:
                slot.held.remove(invocation_id)
            return
        try:
            if isinstance(event, Finished | Failed):
                if isinstance(event, Failed):
                    logger.error("%s could not run invocation:%s: %s: %s", slot.who, slot.held[0],
                                 event.error.type, event.error.message)
                    recovery.fail(self.runner, slot.held[0],
                                  RuntimeError(f"{event.error.type}: {event.error.message}"),
                                  slot.ctx)
            elif isinstance(event, TimedOut):
                slot.gone = True  # killed at its limit
                outer, *nested = slot.held
                logger.warning("invocation:%s exceeded its hard time limit of %g s in %s; the "
                               "worker was killed", outer, event.limit, slot.who)
                recovery.fail(self.runner, outer, TimeLimitExceeded(
                    f"invocation:{outer} exceeded its hard time limit of {event.limit:g} s; "
                    f"its worker (pid {event.pid}) was killed and replaced"), slot.ctx)
                slot.held = nested
                self._take_back(slot, killed=False)
            elif isinstance(event, Lost):
                slot.gone = True  # claim nothing more in its name, whatever comes first
                self._after_death(slot, event)
            elif isinstance(event, Cancelled):
                self._take_back(slot, killed=self.killing)

        except Exception as exc:  # the store failed (locked, gone): try again next turn
            logger.error("%s: taking back %s after %s failed (%s: %s); retrying",
                         slot.who, ",".join(slot.held), type(event).__name__,
                         type(exc).__name__, exc)
            self._unsettled.extend((i, slot.ctx) for i in slot.held)
        finally:
            self._release(slot)

    def _after_death(self, slot: Slot, event: Lost) -> None:
        """The worker died under what it held: each goes back to the broker now, or
        fails after ``max_attempts`` deaths (a poison invocation)."""
        for invocation_id in reversed(slot.held):
            self.deaths[invocation_id] += 1
            deaths = self.deaths[invocation_id]
            if deaths >= self.config.max_attempts:
                logger.error("%s %s while running invocation:%s: its workers died %s under "
                             "it, so it fails (pprunner_max_attempts %d)", slot.who,
                             event.description, invocation_id, times(deaths),
                             self.config.max_attempts)
                recovery.fail(self.runner, invocation_id, WorkerLost(
                    f"the worker running invocation:{invocation_id} {event.description}; "
                    f"its workers died {times(deaths)} under it", pid=event.pid,
                    exitcode=event.exitcode, signal=event.signal), slot.ctx)
                continue
            was = recovery.after_death(self.runner, invocation_id, slot.ctx)
            logger.warning("%s %s while running invocation:%s (%s); rerouted at once "
                           "(death %d of %d allowed)", slot.who, event.description,
                           invocation_id, was, deaths, self.config.max_attempts - 1)
        slot.held = []

    def _take_back(self, slot: Slot, killed: bool) -> None:
        for invocation_id in reversed(slot.held):
            try:
                if killed:
                    self.runner._kill_and_reroute(invocation_id, runner_ctx=slot.ctx)
                else:
                    recovery.after_death(self.runner, invocation_id, slot.ctx)
            except Exception as exc:  # the store is gone or failing: say so, go on stopping
                logger.error("invocation:%s held by %s could not be taken back: %s: %s",
                             invocation_id, slot.who, type(exc).__name__, exc)
        slot.held = []

    def _release(self, slot: Slot) -> None:
        slot.call = None
        slot.held = []
        self._forget_if_done(slot)

    def _forget_if_done(self, slot: Slot) -> None:
        if slot.gone and slot.call is None:
            self.slots.pop(slot.info.id, None)

    def active_runner_ids(self) -> list[str]:
        return [s.info.id for s in list(self.slots.values()) if not s.gone]


def times(count: int) -> str:
    """``once``, ``twice``, ``3 times``: how often, as a sentence says it."""
    return {1: "once", 2: "twice"}.get(count, f"{count} times")
