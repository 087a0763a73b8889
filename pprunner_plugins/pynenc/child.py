"""The worker side: each pprunner worker runs pynenc's runner loop itself.

Registered in every worker (the runner passes this module in
``Supervisor(plugins=...)``). The consumer's maker, :func:`make_consumer`,
hands over the app and the parent's runner context; the worker's pynenc
identity is made in :func:`pprunner_worker_init` — a child
:class:`RunnerContext` whose ``runner_id`` is the pprunner worker's, stored
and heartbeaten before the worker reports ready, as PPR's children register
themselves. :class:`InvocationConsumer` then claims in that name, as PPR's
children do (so every worker claims in parallel), and runs each invocation
through pynenc's own ``DistributedInvocation.run`` (statuses, results,
retries) inside ``HostJobs.running``, so the supervisor knows what each
worker holds (hard time limits, recycling, titles, deaths).

While an invocation waits for others (:meth:`WorkerIdentity.wait`, called by
the runner's ``_waiting_for_results``) it is ``PAUSED`` in pynenc's terms and
waits the core's way (``WorkerContext.wait_for_host``): its worker's slot is
lent until the invocation ends, so the supervisor runs one more worker and as
many waiting parents as workers cannot deadlock; it is ``RESUMED`` as soon as
what it awaits is final.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
from pynenc import context as pynenc_context
from pynenc.exceptions import InvocationStatusError
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

import pprunner
from pprunner.consuming import HostJob, HostJobs
from pprunner.errors import PprunnerError

if TYPE_CHECKING:
    from pynenc.app import Pynenc

logger = logging.getLogger("pprunner.pynenc")

#: how a worker's pynenc runner context is named (PPR's are "PPRWorker")
WORKER_CLS = "PprunnerWorker"
#: first pause after an empty claim; it doubles up to the consumer's longest pause
POLL_MIN = 0.002


@attrs.define
class WorkerIdentity:
    """One worker's pynenc identity, and the waits of the invocation it runs."""

    app: Pynenc
    ctx: RunnerContext
    #: the pprunner worker's context: its wait lends the slot
    worker: Any
    #: seconds a wait may last (``pprunner_wait_timeout``); 0: no limit
    timeout: float
    poll: float

    def wait(self, waiter: str, awaited: list[str]) -> None:
        """pynenc's wait for results, which it calls until they are final: the
        invocation is PAUSED in pynenc's terms, waits the core's way (the worker's
        slot is lent until the invocation ends; pprunner.waiting), then is RESUMED.
        Awaited invocations already final cost one look, no transitions: pynenc asks
        again as long as its own look lags behind."""
        if not self._pending(awaited):
            return
        if not self._transition(waiter, InvocationStatus.PAUSED):
            time.sleep(self.poll)
            return
        logger.info("invocation:%s paused waiting for %s in worker %s; its slot is lent",
                    waiter, ",".join(awaited), self.ctx.runner_id)
        try:
            self.worker.wait_for_host(HostJob(waiter, waiter), awaited,
                                      lambda: self._pending(awaited), self.timeout or None)
        finally:
            self._transition(waiter, InvocationStatus.RESUMED)

    def _pending(self, awaited: list[str]) -> list[str]:
        final = set(self.app.orchestrator.filter_final(awaited))
        return [i for i in awaited if i not in final]

    def _transition(self, invocation_id: str, status: InvocationStatus) -> bool:
        try:
            self.app.orchestrator.set_invocation_status(invocation_id, status, self.ctx)
        except InvocationStatusError as exc:
            logger.warning("invocation:%s not set %s: %s", invocation_id, status.value, exc)
            return False
        return True


class InvocationConsumer:
    """pynenc's runner loop in one worker: claim in the worker's name, run, repeat;
    an empty broker is polled with a back-off up to ``longest_pause``."""

    def __init__(self, identity: WorkerIdentity, limits: dict[str, float | None],
                 longest_pause: float) -> None:
        self.identity = identity
        #: ``time_limit`` and ``soft_time_limit``, as HostJobs.running takes them
        self.limits = limits
        self.longest_pause = longest_pause
        #: what settle() needs to act as this worker: its pynenc context
        self._owner = identity.ctx.to_json()
        self._stopped = threading.Event()

    def consume(self, jobs: HostJobs) -> None:
        app, ctx = self.identity.app, self.identity.ctx
        pause = POLL_MIN
        while not self._stopped.is_set():
            claimed = list(app.orchestrator.get_invocations_to_run(1, ctx))
            if not claimed:
                self._stopped.wait(pause)
                pause = min(pause * 2, self.longest_pause)
                continue
            pause = POLL_MIN
            invocation = claimed[0]
            # an exception of the task's: pynenc stored it (FAILED or RETRY) and logged it
            with jobs.running(invocation.invocation_id, invocation.task.task_id.key,
                              data=self._owner, **self.limits), \
                    contextlib.suppress(Exception):
                invocation.run(ctx)

    def stop(self) -> None:
        self._stopped.set()


#: set in the worker by make_consumer's caller chain: the boot data, then the identity
_boot: dict[str, Any] = {}
_identity: WorkerIdentity | None = None


def boot(app: bytes, parent_ctx_json: str, settings: dict[str, Any]) -> None:
    """The workers' initializer: keep what pprunner_worker_init needs (the app comes
    pickled by the runner at its start)."""
    _boot.update(app=pickle.loads(app), parent=parent_ctx_json, settings=settings)


@pprunner.hookimpl
def pprunner_worker_init(context: Any) -> None:
    global _identity
    if not _boot:
        return
    from .runner import PprunnerRunner

    app: Pynenc = _boot["app"]
    ctx = RunnerContext.from_json(_boot["parent"]).new_child_context(
        WORKER_CLS, runner_id=context.runner_id)
    runner = PprunnerRunner(app, runner_context=ctx)  # the app's runner in this process
    _identity = runner.identity = WorkerIdentity(
        app, ctx, context, timeout=float(_boot["settings"]["wait_timeout"]),
        poll=float(runner.conf.invocation_wait_results_sleep_time_sec))
    pynenc_context.set_runner_context(app.app_id, ctx)
    pynenc_context.set_current_runner(app.app_id, runner)
    runner._register_new_child_runner_context(ctx)
    app.logger.info(f"pprunner worker {context.runner_id} ready (pid {ctx.pid})")


def make_consumer() -> InvocationConsumer:
    """The consumer's maker, in each worker after its boot."""
    if _identity is None:
        raise PprunnerError("this worker was not booted by the pynenc runner")
    settings = _boot["settings"]
    limits = {name: settings[name] for name in ("time_limit", "soft_time_limit")}
    # pprunner_idle_poll_max is the pool's pause between two claims on an empty broker
    # (one thread claimed for every worker before): each of its workers, polling at
    # its own moments, pauses that times the pool's size, so the broker is asked as
    # often and the idle pool costs as little
    longest_pause = float(settings["idle_poll_max"]) * settings["processes"]
    return InvocationConsumer(_identity, limits, longest_pause)
