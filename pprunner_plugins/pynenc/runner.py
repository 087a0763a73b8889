"""``PprunnerRunner``: pynenc's PersistentProcessRunner on pprunner's supervisor.

Each pprunner worker runs pynenc's runner loop itself, as PPR's children do
(:mod:`.child`): it claims with its own runner context, in parallel with the
others, and runs ``DistributedInvocation.run``; pynenc's ownership, blocking
and concurrency control apply as for any runner. The worker tells the
supervisor which invocation it runs (pprunner's host-consumed mode), so the
supervisor *knows* at every moment what each worker holds. A death, seen at
once through the process sentinel, is then a reroute at once through
pynenc's own status rules (:mod:`.settle`), not a RUNNING invocation
waiting ten minutes for ``recover_running_invocations``; and the dead
runner id leaves the heartbeat list in the same loop iteration. When the
runner's own process dies, its workers exit with it, and the next runner on
the host, or a peer there, takes back what they held within seconds
(:mod:`.orphans`). Idle workers back off between claims (never spin), so
that the idle pool asks the broker about once per ``pprunner_idle_poll_max``;
pprunner's time limits, recycling, crash-loop back-off, boot handshake and
death diagnostics apply as they are.

Differences from PPR, each on purpose: a stop SIGKILLs the workers and then
marks what they ran ``KILLED`` and ``REROUTED`` from the parent (PPR asks
its children to do it on SIGTERM; the history is the same), or with
``pprunner_stop = "drain"`` lets them finish first; a waiting invocation is
``PAUSED`` and its worker lends its slot (another worker runs meanwhile)
instead of holding it while it sleeps.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import sys
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.runner.base_runner import BaseRunner

from pprunner.hostfeed import HostFeed
from pprunner.jobs import Call
from pprunner.supervisor import Supervisor

from . import child
from .config import ConfigPprunnerRunner, runner_setting, supervisor_config
from .orphans import OrphanSweep
from .settle import Settler

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.runner.runner_context import RunnerContext

#: attributes that live in the runner's process only (never pickled with the app)
_PARENT_ONLY = ("supervisor", "orphans")


#: attempts at pickling the app while other threads may change it
PICKLE_ATTEMPTS = 5


def _pickled(app: Pynenc) -> bytes:
    """The app, pickled; pynenc's threads (history writers, a runner that stops in
    this process) can change one of its dicts meanwhile, which fails the pickling
    ("dictionary changed size during iteration"): then it is tried again."""
    for _ in range(PICKLE_ATTEMPTS - 1):
        with contextlib.suppress(RuntimeError):
            return pickle.dumps(app, pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(app, pickle.HIGHEST_PROTOCOL)


class PprunnerRunner(BaseRunner):
    """Select it with ``runner_cls = "PprunnerRunner"`` (module docstring)."""

    def __init__(self, app: Pynenc, runner_cache: dict | None = None,
                 runner_context: RunnerContext | None = None) -> None:
        self.supervisor: Supervisor | None = None
        self.orphans: OrphanSweep | None = None
        #: in a worker: its pynenc identity and its waits (set by child.py)
        self.identity: child.WorkerIdentity | None = None
        self.num_processes = 0
        super().__init__(app, runner_cache, runner_context)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for name in _PARENT_ONLY:
            state[name] = None
        return state

    @cached_property
    def conf(self) -> Any:
        return ConfigPprunnerRunner(config_values=self.app.config_values,
                                    config_filepath=self.app.config_filepath)

    @staticmethod
    def mem_compatible() -> bool:
        """Workers are processes: pynenc's memory components cannot be shared."""
        return False

    @property
    def max_parallel_slots(self) -> int:
        if self.supervisor is not None:
            return self.supervisor.processes
        return self.num_processes

    def get_active_child_runner_ids(self) -> list[str]:
        """Workers alive by OS-level check; a dead one is gone from here at once."""
        if self.supervisor is None:
            return []
        return [r.id for r in self.supervisor.live_runners()[1:]]

    # -- lifecycle -----------------------------------------------------------------

    def _on_start(self) -> None:
        config = supervisor_config(self.conf)
        self.num_processes = config.processes
        settings = {name: runner_setting(self.conf, name)
                    for name in ("stop", "idle_poll_max", "wait_timeout")}
        settings.update(time_limit=config.time_limit, soft_time_limit=config.soft_time_limit,
                        processes=config.processes)
        self._stop_mode = settings["stop"]
        # the app is pickled once, now: a worker started later (a respawn) would be
        # pickled while this process's threads use the app, and a dict they change
        # meanwhile fails the pickling ("dictionary changed size during iteration")
        app = _pickled(self.app)
        settler = Settler(self, config.max_attempts)
        self.supervisor = Supervisor(
            feed=HostFeed(Call(child.make_consumer, name="pynenc runner loop"),
                          settler.settle),
            config=config,
            initializer=Call(child.boot, (app, self.runner_context.to_json(), settings),
                             name="pynenc worker boot"),
            # unpickling the app imports pynenc and the app's modules: once, in the template
            prepare=Call(pickle.loads, (app,), name="pynenc app import"),
            plugins=[sys.modules[child.__name__]])
        self.logger.info(f"runner:{self.runner_id} starting {config.processes} pprunner "
                         f"workers ({config.start_method}), stop mode {self._stop_mode}")
        self.supervisor.start()
        if threading.current_thread() is threading.main_thread():
            # reload and scaling as a pprunner supervisor takes them; SIGTERM and SIGINT
            # stay pynenc's (its runner contract on stop)
            self.supervisor.handle_signals((signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU))
        self.orphans = OrphanSweep(self)

    def runner_loop_iteration(self) -> None:
        """The work is the workers' and the supervisor's; this checks the supervisor
        runs and takes back what a dead runner of this host left (:mod:`.orphans`)."""
        supervisor, orphans = self.supervisor, self.orphans
        assert supervisor is not None and orphans is not None
        orphans.maybe_sweep()
        if supervisor.failure:
            self.logger.error(f"runner:{self.runner_id} stops: {supervisor.failure}")
            self.running = False
        time.sleep(self.conf.runner_loop_sleep_time_sec)

    def _on_stop_runner_loop(self) -> None:
        """Maybe in a signal handler: nothing to do here; :meth:`_on_stop` stops."""

    def _on_stop(self) -> None:
        supervisor = self.supervisor
        if supervisor is None:
            return
        # "reroute": the workers are killed, and the supervisor settles what they ran
        # (KILLED, REROUTED); "drain": they finish first
        supervisor.stop(immediate=self._stop_mode == "reroute")
        # pynenc writes history records from threads of their own; a stop returns
        # once the KILLED and REROUTED records it just made are stored
        self.app.state_backend.wait_for_all_async_operations()
        self.supervisor = self.orphans = None

    # -- waiting ----------------------------------------------------------------------

    def _waiting_for_results(self, running_invocation_id: InvocationId,
                             result_invocation_ids: list[InvocationId],
                             runner_args: dict[str, Any] | None = None) -> None:
        """In a worker: pause, lend the slot, resume (:class:`child.WorkerIdentity`)."""
        if self.identity is None:
            time.sleep(self.conf.invocation_wait_results_sleep_time_sec)
            return
        self.identity.wait(running_invocation_id, list(result_invocation_ids))
