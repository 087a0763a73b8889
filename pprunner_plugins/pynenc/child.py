"""The worker side: what a pprunner worker does for a pynenc runner.

Registered in every worker (the runner passes this module in
``Supervisor(plugins=...)``). The initializer hands over the app and the
parent's runner context; :func:`pprunner_worker_init` then gives the worker
its pynenc identity — a child :class:`RunnerContext` whose ``runner_id`` is
the pprunner worker's, stored and heartbeaten before the worker reports
ready, as PPR's children register themselves. :func:`run_invocation` runs
one invocation the parent claimed in this worker's name, through pynenc's
own ``DistributedInvocation.run`` (statuses, results, retries).

While an invocation waits for others (:meth:`Waiting.wait`, called by the
runner's ``_waiting_for_results``), it is ``PAUSED`` in pynenc's terms and
the worker runs what the orchestrator lets it claim — the invocations
others wait for come first (pynenc's blocking control) — nested under it,
then ``RESUMED`` as soon as one awaited result is final. Every invocation
claimed that way is noted to the parent (``WorkerContext.note``), which
takes it back at once if the worker dies.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from typing import TYPE_CHECKING, Any

import attrs
from pynenc import context as pynenc_context
from pynenc.exceptions import InvocationStatusError
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

import pprunner
from pprunner.errors import PprunnerError

if TYPE_CHECKING:
    from pynenc.app import Pynenc

logger = logging.getLogger("pprunner.pynenc")

#: how a worker's pynenc runner context is named (PPR's are "PPRWorker")
WORKER_CLS = "PprunnerWorker"


class WaitCycle(PprunnerError):
    """An invocation waits for one that waits for it, in this very worker: neither
    could ever finish. Raised in the innermost one, which fails with it."""


class WaitTimeout(PprunnerError):
    """An invocation waited longer than ``pprunner_wait_timeout``."""


@attrs.define
class Waiting:
    """One worker's pynenc state: its identity and the invocations it runs."""

    app: Pynenc
    ctx: RunnerContext
    max_depth: int
    timeout: float
    poll: float
    #: invocations running in this worker, outermost first
    stack: list[str] = attrs.Factory(list)
    #: paused invocations and when they began waiting
    paused: dict[str, float] = attrs.Factory(dict)

    def run(self, invocation: Any) -> None:
        self.stack.append(invocation.invocation_id)
        try:
            invocation.run(self.ctx)
        except Exception:  # pynenc stored it (FAILED or RETRY) and logged it
            pass
        finally:
            self.stack.pop()

    def wait(self, waiter: str, awaited: list[str]) -> None:
        """One step of a wait (pynenc calls it until a result is final)."""
        orchestrator = self.app.orchestrator
        cycle = [a for a in awaited if a in self.stack]
        if cycle:
            raise WaitCycle(f"invocation:{waiter} waits for invocation:{cycle[0]}, which "
                            f"waits (paused) for it in worker {self.ctx.runner_id}")
        if waiter not in self.paused:
            if not self._transition(waiter, InvocationStatus.PAUSED):
                time.sleep(self.poll)
                return
            self.paused[waiter] = time.monotonic()
            logger.info("invocation:%s paused waiting for %s in worker %s; it runs other "
                        "invocations meanwhile", waiter, ",".join(awaited), self.ctx.runner_id)
        if not orchestrator.filter_final(awaited) and not self._run_one_more():
            time.sleep(self.poll)
        waited = time.monotonic() - self.paused[waiter]
        if orchestrator.filter_final(awaited):
            self._resume(waiter)
        elif self.timeout and waited > self.timeout:
            self._resume(waiter)
            raise WaitTimeout(f"invocation:{waiter} waited {waited:.1f} s for "
                              f"{','.join(awaited)} (pprunner_wait_timeout {self.timeout:g} s)")

    def _run_one_more(self) -> bool:
        """Run one invocation the orchestrator gives this worker, nested; False if none.

        Not from an async task's wait (``await invocation.async_result()``): pynenc
        runs a task with ``asyncio.run``, which cannot start inside a running loop,
        so that wait only pauses and polls, as PersistentProcessRunner's does."""
        if len(self.stack) > self.max_depth or _in_event_loop():
            return False
        claimed = list(self.app.orchestrator.get_invocations_to_run(1, self.ctx))
        if not claimed:
            return False
        context = pprunner.current_context()
        assert context is not None
        invocation_id = claimed[0].invocation_id
        context.note(("took", invocation_id))  # before it runs: a death must find it
        self.run(claimed[0])
        context.note(("done", invocation_id))
        return True

    def _resume(self, waiter: str) -> None:
        del self.paused[waiter]
        self._transition(waiter, InvocationStatus.RESUMED)

    def _transition(self, invocation_id: str, status: InvocationStatus) -> bool:
        try:
            self.app.orchestrator.set_invocation_status(invocation_id, status, self.ctx)
        except InvocationStatusError as exc:
            logger.warning("invocation:%s not set %s: %s", invocation_id, status.value, exc)
            return False
        return True


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: set in the worker by the initializer, then by pprunner_worker_init
_boot: dict[str, Any] = {}
_waiting: Waiting | None = None


def boot(app: bytes, parent_ctx_json: str, settings: dict[str, Any]) -> None:
    """The workers' initializer: keep what pprunner_worker_init needs (the app comes
    pickled by the runner at its start)."""
    _boot.update(app=pickle.loads(app), parent=parent_ctx_json, settings=settings)


@pprunner.hookimpl
def pprunner_worker_init(context: Any) -> None:
    global _waiting
    if not _boot:
        return
    from .runner import PprunnerRunner

    app: Pynenc = _boot["app"]
    ctx = RunnerContext.from_json(_boot["parent"]).new_child_context(
        WORKER_CLS, runner_id=context.runner_id)
    runner = PprunnerRunner(app, runner_context=ctx)  # the app's runner in this process
    settings = _boot["settings"]
    _waiting = runner.waiting = Waiting(
        app, ctx, max_depth=int(settings["max_wait_depth"]),
        timeout=float(settings["wait_timeout"]),
        poll=float(runner.conf.invocation_wait_results_sleep_time_sec))
    pynenc_context.set_runner_context(app.app_id, ctx)
    pynenc_context.set_current_runner(app.app_id, runner)
    runner._register_new_child_runner_context(ctx)
    app.logger.info(f"pprunner worker {context.runner_id} ready (pid {ctx.pid})")


def run_invocation(invocation: Any) -> None:
    """Run one invocation claimed in this worker's name (pynenc records the outcome)."""
    if _waiting is None:
        raise PprunnerError("this worker was not booted by the pynenc runner")
    _waiting.run(invocation)
