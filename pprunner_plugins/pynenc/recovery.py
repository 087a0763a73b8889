"""Taking an invocation back from a worker, through pynenc's own orchestrator.

pynenc's status rules decide the path, so the history reads as pynenc's
own recovery would have left it, only minutes earlier:

- the worker *died* (killed by a signal, the OOM killer, a crash): a
  ``RUNNING`` invocation goes ``RUNNING_RECOVERY`` then ``REROUTED``, a
  ``PENDING`` one ``PENDING_RECOVERY`` then ``REROUTED`` — the transitions
  ``recover_running_invocations`` makes for a dead runner, with no
  ``KILLED`` entry (nobody killed it on purpose). A ``PAUSED`` or
  ``RESUMED`` one (it waited when its worker died) has no recovery
  transition in pynenc, so it goes ``KILLED`` then ``REROUTED``.
- the *runner stops* (PPR's contract): ``KILLED`` then ``REROUTED``, by
  pynenc's ``BaseRunner._kill_and_reroute``.
- an invocation that *failed for pprunner's reasons* (its hard time limit,
  its worker died ``max_attempts`` times under it) fails, or retries when
  the task's ``retry_for`` covers the error, as if the task had raised it.

How often an invocation's workers died under it is read from pynenc's own
history (:func:`deaths`): each death left a recovery record there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynenc.exceptions import InvocationStatusError
from pynenc.invocation.status import InvocationStatus

if TYPE_CHECKING:
    from pynenc.runner.runner_context import RunnerContext

_RECOVERY = {InvocationStatus.RUNNING: InvocationStatus.RUNNING_RECOVERY,
             InvocationStatus.PENDING: InvocationStatus.PENDING_RECOVERY}
_WAITING = (InvocationStatus.PAUSED, InvocationStatus.RESUMED)
_RECOVERED = frozenset(_RECOVERY.values())


def after_death(runner: Any, invocation_id: str, owner: RunnerContext) -> str:
    """Reroute what a dead worker held; returns the status it was in."""
    orchestrator = runner.app.orchestrator
    status = orchestrator.get_invocation_status(invocation_id)
    if status in _RECOVERY:
        try:
            orchestrator.set_invocation_status(invocation_id, _RECOVERY[status],
                                               runner.runner_context)
            orchestrator.reroute_invocations({invocation_id}, runner.runner_context)
        except InvocationStatusError as exc:  # it moved on meanwhile (another recoverer)
            runner.logger.warning(f"invocation:{invocation_id} not rerouted: {exc}")
    elif status in _WAITING:
        runner._kill_and_reroute(invocation_id, runner_ctx=owner)
    return status.value


def deaths(runner: Any, invocation_id: str) -> int:
    """How many times the invocation was recovered from a dead runner, by its history
    (records this process wrote from other threads are waited for first)."""
    state = runner.app.state_backend
    state.wait_for_all_async_operations()
    return sum(h.status_record.status in _RECOVERED for h in state.get_history(invocation_id))


def fail(runner: Any, invocation_id: str, error: Exception, owner: RunnerContext) -> None:
    """End an invocation with ``error`` as if its task raised it (retry rules included)."""
    app, orchestrator = runner.app, runner.app.orchestrator
    status = orchestrator.get_invocation_status(invocation_id)
    if status.is_final():
        return
    invocation = app.state_backend.get_invocation(invocation_id)
    try:
        if status is InvocationStatus.PAUSED:
            orchestrator.set_invocation_status(invocation_id, InvocationStatus.RESUMED, owner)
        retriable = isinstance(error, invocation.task.retriable_exceptions)
        if retriable and status is not InvocationStatus.PENDING and \
                invocation.num_retries < invocation.task.conf.max_retries:
            orchestrator.set_invocation_retry(invocation_id, error, owner)
        else:
            orchestrator.set_invocation_exception(invocation, error, owner)
    except InvocationStatusError as exc:
        runner.logger.warning(f"invocation:{invocation_id} could not be failed: {exc}")
