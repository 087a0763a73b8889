"""The supervisor: keeps N worker processes alive and nothing they hold lost.

One loop (:meth:`Supervisor._loop`) waits on every worker's process sentinel,
every worker's pipe and a wake-up pipe, so a death is an event seen at once,
not found at the next poll. Each iteration: heartbeat, handle what woke it
(worker reports, queued signals and commands), enforce boot timeouts and
hard time limits, reap the dead (what they held goes back), replace workers
that should retire, respawn to the configured count, and — in push mode —
hand queued calls to idle workers.

Where work comes from is the *feed*: in pull mode a
:class:`~pprunner.pull.BackendFeed` (workers claim from the app's backend),
in push mode a :class:`~pprunner.dispatch.Dispatcher` (a host submits calls).
Everything else — boot handshake, limits, recycling, crash-loop back-off,
death diagnostics, scaling, reload, health — is the same loop for both.

Signal handlers and other threads only queue what they want and write to
the wake-up pipe; everything happens in the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from . import config as config_module
from . import health
from .backend import Backend
from .config import Config
from .control import ControlSocket
from .dispatch import Dispatcher
from .errors import BackendError, ConfigError, PprunnerError
from .exitcodes import ExitCode
from .invocation import ErrorInfo, Invocation, RunnerInfo, RunnerKind
from .jobs import Call
from .plugins import Plugins, get_plugin_manager
from .pool import Child, CrashLoop, Phase, Retirement
from .proctitle import set_title
from .progress import BurstProgress
from .pull import BackendFeed
from .spawn import StopFlag, WorkerExit, WorkerSpec, describe_exit
from .task import App

logger = logging.getLogger("pprunner.supervisor")

#: at most this many seconds between a stopping host's ``while_stopping`` calls
STOP_TICK = 0.5
#: seconds a straggler gets between SIGTERM (hand back your invocation) and SIGKILL
TERMINATE_GRACE = 5.0
#: what the loop's selector says woke it: the wake-up pipe or the control socket, a
#: worker's pipe (its reports), a worker's process sentinel (it exited)
_WAKEUP, _REPORTS, _EXITED = "wakeup", "reports", "exited"


def new_runner_id() -> str:
    return os.urandom(6).hex()


class Feed(Protocol):
    """Where the supervisor's workers get their jobs (see the module docstring)."""

    @property
    def backend(self) -> Backend | None: ...
    #: how often the loop must look at the feed whatever happens; None: no need
    @property
    def tick(self) -> float | None: ...
    #: what workers run may name functions of the supervisor's __main__
    calls_from_main: bool
    def app_path(self) -> str | None: ...
    def boot(self, processes: int, stopping: Callable[[], bool], wake: Callable[[], None],
             plugins: Plugins) -> None: ...
    def heartbeat(self, plugins: Plugins, runners: Sequence[RunnerInfo]) -> None: ...
    def received(self, child: Child, message: tuple[Any, ...]) -> None: ...
    def hand_out(self, children: Iterable[Child]) -> None: ...
    def worker_exited(self, child: Child,
                      error: ErrorInfo | None) -> tuple[Invocation | Call, ...]: ...
    def drained(self) -> bool: ...
    def stopping(self) -> None: ...
    def close(self, runner_ids: list[str], backend_lost: bool) -> None: ...


class Supervisor:
    """Runs ``processes`` persistent workers.

    Pull mode: ``Supervisor(app, processes=4)``; workers claim the app's
    invocations from its backend. Push mode: ``Supervisor(dispatcher=d,
    config=c, processes=4)``; workers run the calls submitted to the
    :class:`~pprunner.dispatch.Dispatcher` (how :class:`pprunner.Executor`
    and the host-framework plugins use it).

    ``run()`` blocks and handles SIGTERM/SIGINT/SIGHUP/SIGTTIN/SIGTTOU itself
    (the CLI uses it); ``start()``/``stop()`` run the same loop in a
    background thread for embedding and tests; ``with Supervisor(app,
    processes=2):`` does both. ``processes=0`` (pull mode only) runs tasks
    inline, in this process (:class:`~pprunner.inline.InlineSupervisor`).

    :param initializer: called in every worker before it reports ready (a
        host's bootstrap); if it raises, the supervisor stops with exit 4
        instead of respawning.
    :param plugins: plugins to register besides the entry-point ones: a
        host adapter's own hook implementations. A module is registered here
        and, by name, in every worker (its worker-side hooks); any other object
        only here.
    """

    def __new__(cls, app: App | None = None, processes: int | None = None,
                **options: Any) -> Supervisor:
        if cls is Supervisor and app is not None and \
                (app.config.processes if processes is None else processes) == 0:
            from .inline import InlineSupervisor  # inline mode is its own, small class

            return super().__new__(InlineSupervisor)
        return super().__new__(cls)

    def __init__(self, app: App | None = None, processes: int | None = None, *,
                 dispatcher: Dispatcher | None = None, config: Config | None = None,
                 initializer: Call | None = None, plugins: Sequence[object] = (),
                 burst: bool = False, progress: bool = False,
                 options: argparse.Namespace | None = None) -> None:
        if (app is None) == (dispatcher is None):
            raise ConfigError("a Supervisor needs an app (pull mode) or a dispatcher "
                              "(push mode), not both")
        self.app = app
        self.config = app.config if app is not None else config or config_module.resolve([])
        self.plugins = (app.plugins if app is not None
                        else get_plugin_manager().configure(self.config))
        self._plugin_modules = tuple(p.__name__ for p in plugins
                                     if isinstance(p, types.ModuleType))
        for plugin in plugins:
            if self.plugins.manager.is_registered(plugin):
                continue
            name = plugin.__name__ if isinstance(plugin, types.ModuleType) else None
            self.plugins.manager.register(plugin, name=name)
        self.processes = self.config.processes if processes is None else processes
        if self.processes < 1 and type(self) is Supervisor:
            raise ConfigError(f"processes must be >= 1 (0 runs inline, which only pull mode "
                              f"can), got {self.processes}")
        self.id = new_runner_id()
        self.burst = burst
        self.options = options
        self.initializer = initializer
        self.feed: Feed = (BackendFeed(app, self.id, burst=burst, progress=progress)
                           if app is not None else dispatcher)  # type: ignore[assignment]
        self.workers: dict[str, Child] = {}
        self.crash_loop = CrashLoop(self.config.crash_loop_period)
        self.exit_code = ExitCode.OK
        #: why it stopped by itself (no worker could start), for hosts to report
        self.failure: str | None = None
        self.started_at = time.time()
        self._signals: deque[int] = deque()
        self._commands: deque[Callable[[], None]] = deque()
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        #: what the loop waits on, kept up to date as workers come and go (built once:
        #: a fresh poll set per pass costs more than a call's round trip in push mode)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, _WAKEUP)
        #: workers whose process sentinel became ready in the last wait
        self._exited: list[Child] = []
        self._stop_requested = False
        self._immediate = False
        #: set once every worker has booted (or the supervisor ended: ``_ended``)
        self._ready = threading.Event()
        self._ended = False
        self._titled = False
        #: the backend was unreachable when stopping: nothing more is asked of it
        self._backend_lost = False
        self._thread: threading.Thread | None = None
        #: hosted (``start(hosted=True)``): the thread whose event loop drives it
        self._host_thread: int | None = None
        #: a pass of the loop is under way (a hosted submit then only wakes it)
        self._in_pass = False
        self._while_stopping: Callable[[], None] | None = None
        self._next_beat = 0.0
        self._mp: Any = multiprocessing.get_context(self.config.start_method)
        self.stop_event: StopFlag | None = None
        self._lifeline: tuple[Any, Any] | None = None
        self._control: ControlSocket | None = None
        self.app_path: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.name} processes={self.processes}>"

    @property
    def name(self) -> str:
        return self.app.name if self.app is not None else "push mode"

    @property
    def max_parallel_slots(self) -> int:
        """How many jobs can run at once: one per worker process."""
        return max(self.processes, 1)

    @property
    def backend(self) -> Backend | None:
        return self.feed.backend

    @property
    def progress(self) -> BurstProgress | None:
        """A burst run's count of what ended since it began (pull mode)."""
        return self.feed.progress if isinstance(self.feed, BackendFeed) else None

    @property
    def view(self) -> SupervisorView:
        return SupervisorView(self)

    # -- public control ------------------------------------------------------------

    def run(self) -> ExitCode:
        """Supervise until stopped (or, in burst mode, until the queue is drained).

        In the main thread it handles SIGTERM and SIGINT (first: graceful stop;
        second SIGINT: stop at once), SIGHUP (reload) and SIGTTIN/SIGTTOU (one
        worker more/less), and restores the previous handlers afterwards;
        elsewhere stop it with :meth:`request_stop`.
        """
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = self.handle_signals(self.HANDLED_SIGNALS)
            self._titled = True
            self._set_title()
        try:
            self._boot()
            self._supervise()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return self.exit_code

    def start(self, *, hosted: bool = False) -> Supervisor:
        """Boot the workers and supervise them from a background thread.

        ``hosted=True``: no thread; the caller's own event loop drives the
        supervisor. It watches :meth:`fileno` and calls :meth:`turn` when that
        is readable and when the delay ``turn`` returned has passed. Every
        event is then seen in the host's thread, and a call submitted there is
        handed to an idle worker before ``submit`` returns: a host whose
        callbacks run on its loop (Celery's) pays no hand-off between threads
        per call. A dispatcher with ``deliver="supervisor"`` calls them there.
        """
        if hosted and not hasattr(self._selector, "fileno"):
            raise PprunnerError(f"a hosted supervisor needs a selector with a file descriptor "
                                f"(epoll, kqueue, devpoll); this platform's is "
                                f"{type(self._selector).__name__}")
        self._boot()
        if hosted:
            self._host_thread = threading.get_ident()
            return self
        self._thread = threading.Thread(target=self._supervise, name="pprunner-supervisor",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, *, immediate: bool = False, timeout: float | None = None,
             while_stopping: Callable[[], None] | None = None) -> ExitCode:
        """Ask for a stop (graceful unless ``immediate``) and wait until it is done
        (or ``timeout`` passed; hosted, it is always done). Called from inside a
        pass (a signal handler that interrupted one), it only marks an immediate
        stop as asked for, and returns at once.

        :param while_stopping: hosted only (the stop then runs in this thread, and
            the last events are delivered here): called about every
            :data:`STOP_TICK` seconds while the stop waits for busy workers, so the
            host keeps its own timers (broker heartbeats) going.
        """
        self._immediate = self._immediate or immediate
        if self._in_pass:  # a host's signal handler interrupted a pass (Celery's second
            return self.exit_code  # Ctrl-C): that stop, or the host's next call, does it
        if self._host_thread is not None:
            self._while_stopping = while_stopping
            self._stop_requested = True
            while self.turn() is not None:  # the pass that sees the stop carries it out
                pass
            return self.exit_code
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.exit_code

    def fileno(self) -> int:
        """Hosted: readable when the supervisor has something to do (a worker
        reported or exited, a command or signal came); then call :meth:`turn`."""
        return self._selector.fileno()

    def turn(self) -> float | None:
        """Hosted: one pass of the supervisor's loop, without waiting. Returns the
        seconds within which to call it again (heartbeats, deadlines, respawns),
        or None once the supervisor has stopped (asked to, or by itself: see
        :attr:`failure`); its file descriptor is closed then."""
        if self._in_pass:
            raise PprunnerError("Supervisor.turn() was called from inside a turn")
        if self._ended:
            return None
        self._in_pass = True
        try:
            going = self._guarded(lambda: self._pass(0.0))
        finally:
            self._in_pass = False
        return self._next_tick() if going else None

    def scale_to(self, processes: int) -> None:
        """Grow or shrink the pool while it runs; shrinking retires workers gracefully.
        Safe from any thread: the loop carries it out."""
        if processes < 1:
            raise ConfigError(f"cannot scale to {processes} workers (at least 1)")
        self._command(lambda: self._scale(processes))

    def reload(self) -> None:
        """Replace every worker, one at a time, by one that imports the code afresh.
        Safe from any thread: the loop carries it out."""
        self._command(self._reload)

    def signal_worker(self, pid: int, signum: int, why: str) -> None:
        """Send ``signum`` to the worker whose process is ``pid``, if it is one of
        this supervisor's: a host ending the job it runs (Celery's
        ``revoke(terminate=True)``). Safe from any thread: the loop sends it,
        so the worker's end is described with ``why`` as the supervisor's doing,
        and the job it held ends as any job whose worker dies (``Lost``)."""
        self._command(lambda: self._signal_worker(pid, signum, why))

    @property
    def running(self) -> bool:
        """Whether the loop started by :meth:`start` still runs: False once a stop
        is done, or once it stopped by itself (see :attr:`failure`)."""
        if self._host_thread is not None:
            return not self._ended
        return self._thread is not None and self._thread.is_alive()

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake()

    def handle_signals(self, signals: Iterable[signal.Signals]) -> dict[int, Any]:
        """Have the supervisor handle these signals as ``run()`` does (SIGHUP: reload,
        SIGTTIN/SIGTTOU: one worker more/less, SIGTERM/SIGINT: stop); for a host that
        runs it with ``start()`` in its own main thread and keeps the signals it owns.
        Returns the previous handlers. Main thread only, as for any signal handler."""
        return {sig: signal.signal(sig, self._queue_signal) for sig in signals}

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has booted once (the boot handshake a host waits
        for before it takes work), or the supervisor stopped; True when ready. After
        False, :attr:`failure` says why (an initializer that raised, a crash loop)."""
        self._ready.wait(timeout)
        return self._ready.is_set() and not self._ended

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def live_runners(self) -> list[RunnerInfo]:
        """The supervisor and each worker whose process is alive by OS-level check,
        each worker with its phase (what ``pprunner top`` shows as booting or retiring)."""
        me = RunnerInfo(id=self.id, kind=RunnerKind.SUPERVISOR, pid=os.getpid(),
                        supervisor=self.id, started_at=self.started_at)
        children = list(self.workers.values())  # a copy: hosts ask from their own thread
        return [me] + [attrs.evolve(c.info, phase=c.phase.value)
                       for c in children if c.process.is_alive()]

    # -- boot ----------------------------------------------------------------------

    def _prepare(self, processes: int) -> None:
        """Tell the plugins a supervisor is booting, then ready the feed; if either
        fails, the plugins hear it stopped (nothing else was started yet)."""
        try:
            self.plugins.hook.pprunner_supervisor_booting(supervisor=self.view)
            self.feed.boot(processes, self._stopping, self._work_came, self.plugins)
        except BaseException:
            self.plugins.hook.pprunner_supervisor_stopped(supervisor=self.view)
            raise

    def _boot(self) -> None:
        self._prepare(self.processes)
        try:
            self._start_helpers()
            for slot in range(1, self.processes + 1):
                self._spawn(slot)
        except BaseException:
            self._shutdown(immediate=True)
            self._close()
            raise
        logger.info("supervisor %s started %d workers (%s)%s", self.id, self.processes,
                    self.config.start_method,
                    f", backend {self.backend.url}" if self.backend is not None else "")
        self.plugins.hook.pprunner_supervisor_started(supervisor=self.view,
                                                      options=self.options)

    def _start_helpers(self) -> None:
        """The stop flag and the lifeline pipe; in pull mode also the control socket
        (``pprunner scale`` finds supervisors through the backend). No helper process:
        ``runner_cache`` is served over the workers' pipes (:mod:`pprunner.cache`)."""
        self.app_path = self.feed.app_path()  # fails early for an app workers cannot import
        self.stop_event = StopFlag(self._mp)
        self._lifeline = self._mp.Pipe(duplex=False)
        if self.app is None:
            return
        self._control = ControlSocket(self.id)
        self._selector.register(self._control.socket, selectors.EVENT_READ, _WAKEUP)

    def _spawn(self, slot: int) -> Child:
        assert self._lifeline is not None
        runner_id = new_runner_id()
        ours, theirs = self._mp.Pipe()
        spec = WorkerSpec(
            runner_id=runner_id, slot=slot, supervisor_id=self.id, app_path=self.app_path,
            settings=self.config.to_dict(), stop_event=self.stop_event,
            lifeline=self._lifeline[0],
            lifeline_writer_fd=self._lifeline[1].fileno(), channel=theirs,
            initializer=self.initializer, plugin_modules=self._plugin_modules,
            plugin_entries=self.plugins.entries, calls_from_main=self.feed.calls_from_main)
        process = self.plugins.hook.pprunner_spawn_worker(
            spec=spec, start_method=self.config.start_method)
        theirs.close()  # the child has its own copy now
        info = RunnerInfo(id=runner_id, kind=RunnerKind.WORKER, pid=process.pid,
                          supervisor=self.id, slot=slot)
        child = self.workers[runner_id] = Child(info, process, ours)
        self._selector.register(ours, selectors.EVENT_READ, (child, _REPORTS))
        self._selector.register(process.sentinel, selectors.EVENT_READ, (child, _EXITED))
        self.plugins.hook.pprunner_worker_started(runner=info)
        logger.debug("spawned worker %d as runner %s, pid %s", slot, runner_id, process.pid)
        return child

    # -- the loop ------------------------------------------------------------------

    def _supervise(self) -> None:
        """The loop thread (``run``, ``start``): passes until a stop, then the stop."""
        self._guarded(self._loop)

    def _loop(self) -> bool:
        while self._pass(self._next_tick()):
            pass
        return False

    def _guarded(self, passes: Callable[[], bool]) -> bool:
        """Run ``passes`` (the loop, or a hosted turn's one pass); once it returns
        False the supervisor stops its workers and closes; if it raises, it kills
        them first. Returns whether the supervisor goes on."""
        going = False
        try:
            going = passes()
            if not going:
                self._stop_workers()
        except BaseException as exc:
            if not (isinstance(exc, BackendError) and self._stopping()):
                self.exit_code = ExitCode.INTERNAL_ERROR
                self._shutdown(immediate=True)
                raise
            self._stop_without_backend(exc)  # it stopped waiting as a stop was asked
        finally:
            if not going:
                self._close()
                self._ended = True
                self._ready.set()  # a host waiting for workers that never came hears it
        return going

    def _stop_workers(self) -> None:
        self.plugins.hook.pprunner_supervisor_stopping(supervisor=self.view)
        self._shutdown()
        if self.exit_code == ExitCode.CRASH_LOOP:  # the last line says why it stopped
            logger.error("no worker could be kept running for %.0f s; the last one died "
                         "before booting: %s", self.config.crash_loop_period,
                         self.crash_loop.cause)

    def _pass(self, timeout: float) -> bool:
        """One pass of the loop: heartbeat when due, wait up to ``timeout`` for what
        wakes it, then act on it. False when the supervisor should stop."""
        # workers' reports wake the loop often; heartbeats keep their own pace
        if time.monotonic() >= self._next_beat:
            self._heartbeat()
            self._next_beat = time.monotonic() + self.config.heartbeat_interval
        if self._stop_requested:
            return False
        if self._drained():
            self._stop_requested = True
            return False
        self._wait(timeout)
        self._enforce_limits()
        self._reap(self._exited)
        if self._stop_requested:
            return True  # the next pass stops, after a heartbeat if one is due
        if self.crash_loop.given_up():
            self.exit_code = ExitCode.CRASH_LOOP
            self.failure = f"workers keep dying before they boot: {self.crash_loop.cause}"
            self._stop_requested = True
            return True
        self._take_back_lent()
        self._recycle()
        self._respawn()
        self.feed.hand_out(self.workers.values())
        return True

    def _drained(self) -> bool:
        """Burst mode: the queue is drained, and every worker has booted.

        A run whose workers cannot start failed, whatever the queue holds: it
        goes on until that shows (an app that cannot load, a crash loop) and
        exits with that code, not 0.
        """
        booted = [c.booted for c in self.workers.values()]
        return bool(booted) and all(booted) and self.feed.drained()

    def _next_tick(self) -> float:
        """Seconds until the loop must look again: a heartbeat, a deadline, a respawn."""
        now = time.monotonic()
        tick = min(self.config.heartbeat_interval, self.feed.tick or float("inf"))
        moments = [c.deadline(self.config.boot_timeout) for c in self.workers.values()]
        if len(self.workers) < self._target():
            moments.append(self.crash_loop.next_spawn)
        soonest = min((m for m in moments if m is not None), default=now + tick)
        return max(0.0, min(tick, soonest - now))

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a worker exits or reports, a signal or command comes, or ``timeout``."""
        self._exited = []
        woken = False
        for key, _events in self._selector.select(timeout):
            if key.data == _WAKEUP:
                woken = True
                continue
            child, what = key.data
            if what == _REPORTS:
                self._receive(child)
            else:
                self._exited.append(child)
        if woken or self._commands or self._signals:
            self._drain_wakeups()
            if not self._stop_requested:  # a submitted call goes out now, not after the pass
                self.feed.hand_out(self.workers.values())

    def _receive(self, child: Child) -> None:
        """Take in a worker's reports; an idle one is handed its next call at once (push
        mode), before the rest of the pass, so a busy pool's workers barely wait."""
        booted = child.booted
        for message in child.receive():
            self.feed.received(child, message)
        if child.booted and not booted:
            self.crash_loop.booted()
            self.plugins.hook.pprunner_worker_ready(runner=child.info)
            if sum(c.booted for c in self.workers.values()) >= self.processes:
                self._ready.set()
        if child.idle and not self._stop_requested:
            self.feed.hand_out(self.workers.values())

    def _enforce_limits(self) -> None:
        """Kill workers past their boot timeout or their job's hard time limit."""
        now = time.monotonic()
        for child in self.workers.values():
            kill = child.overdue(now, self.config.boot_timeout)
            if kill is not None:
                child.kill_for(kill)
        if any(c.booted for c in self.workers.values()):  # the dead are reaped next
            self.crash_loop.healthy()

    def _recycle(self) -> None:
        """Replace workers that should retire, one at a time, without losing capacity.

        The replacement is started first; the old worker is told to retire
        only once the new one has booted, and it finishes what it runs. One
        replacement boots at a time; a retiring worker still busy with a long
        job does not hold up the others, and idle workers go first. A worker
        that asked to go at once (``replace_after_job``) goes without waiting.
        """
        self._retire_at_once()
        if any(not c.booted for c in self.workers.values()):
            return
        candidates = [c for c in self.workers.values()
                      if c.retirement is not None and c.phase is Phase.SERVING]
        if not candidates:
            return
        child = min(candidates, key=lambda c: bool(c.running) or c.call is not None)
        retirement = child.retirement
        assert retirement is not None
        if not retirement.replace:
            logger.info("%s retires: %s", child.who, retirement.reason)
            child.retire()
        elif retirement.replacement is None or retirement.replacement not in self.workers:
            if self.crash_loop.may_spawn():
                retirement.replacement = self._spawn(child.info.slot).info.id
        elif self.workers[retirement.replacement].booted:
            logger.info("%s retires (%s); worker %s takes its place", child.who,
                        retirement.reason, retirement.replacement)
            child.retire()

    def _retire_at_once(self) -> None:
        """Retire every worker that asked to be replaced now, starting its replacement
        in the same breath: it is handed nothing more, so its slot would stay empty
        until the replacement boots either way."""
        for child in list(self.workers.values()):
            retirement = child.retirement
            if retirement is None or not retirement.at_once or child.phase is not Phase.SERVING:
                continue
            if retirement.replace and self.crash_loop.may_spawn():
                retirement.replacement = self._spawn(child.info.slot).info.id
            logger.info("%s retires at once (%s)%s", child.who, retirement.reason,
                        f"; worker {retirement.replacement} takes its place"
                        if retirement.replacement else "")
            child.retire()

    def _heartbeat(self) -> None:
        self.feed.heartbeat(self.plugins, self.live_runners())
        if self.config.health_file:
            booted = sum(c.phase is Phase.SERVING for c in self.workers.values())
            health.write(self.config.health_file, {
                "pid": os.getpid(), "supervisor": self.id, "processes": self.processes,
                "booted": booted, "ready": booted >= self.processes})

    @property
    def max_lent_slots(self) -> int:
        """How many workers may run beyond ``processes`` while others wait."""
        bound = self.config.max_lent_slots
        return self.processes if bound is None else bound

    def _target(self) -> int:
        """How many workers should hold a slot: ``processes``, plus one for each
        worker whose job waits in ``lend_slot()``, up to ``max_lent_slots``."""
        waiting = sum(c.waiting for c in self.workers.values())
        return self.processes + min(waiting, self.max_lent_slots)

    def _respawn(self) -> None:
        """Start workers until as many hold a slot as the target, in the lowest free
        slots (a worker being replaced shares its slot with its replacement)."""
        target = self._target()
        used = {c.info.slot for c in self.workers.values()}
        held = len({c.info.slot for c in self.workers.values() if c.holds_slot})
        slot = 0
        while held < target and self.crash_loop.may_spawn():
            slot += 1
            if slot not in used:
                self._spawn(slot)
                held += 1

    def _take_back_lent(self) -> None:
        """Waits ended: retire the workers beyond the target, without replacement, as a
        scale-down does (each finishes its job first; idle ones go first). A waiting
        worker is never one of them."""
        keep = [c for c in self.workers.values() if c.holds_slot]
        excess = len({c.info.slot for c in keep}) - self._target()
        if excess <= 0:
            return
        spare = sorted((c for c in keep if c.retirement is None and not c.waiting),
                       key=lambda c: (bool(c.running) or c.call is not None, -c.info.slot))
        for child in spare[:excess]:
            child.retirement = Retirement("its lent slot was given back", replace=False)

    def _reap(self, candidates: Iterable[Child] | None = None) -> None:
        """Handle every worker (of ``candidates``: those whose sentinel fired) that has
        exited: what it held goes back, tell the plugins."""
        for child in list(self.workers.values() if candidates is None else candidates):
            if child.process.exitcode is None:
                continue
            self._receive(child)  # what it said just before it exited
            del self.workers[child.info.id]
            self._selector.unregister(child.connection)
            self._selector.unregister(child.process.sentinel)
            child.process.join()
            child.connection.close()
            exitcode = child.process.exitcode
            signame, description = describe_exit(exitcode, child.signals_sent)
            error: ErrorInfo | None
            if child.kill is not None:
                error = child.kill.error
            elif child.requested_stop and not child.killed_from_outside:
                error = None
            else:
                error = ErrorInfo("WorkerDied", f"{child.who} {description} while running "
                                  "this invocation")
            held = self.feed.worker_exited(child, error)
            exit = WorkerExit(
                exitcode=exitcode, signal=signame, description=description,
                invocations=tuple(h for h in held if isinstance(h, Invocation)),
                calls=tuple(h for h in held if isinstance(h, Call)),
                requested=child.requested_stop, peak_memory=child.peak_memory,
                cause=child.exit_cause())
            self.plugins.hook.pprunner_worker_exited(runner=child.info, exit=exit)
            self._log_exit(child, exit)
            if self._stop_requested:
                continue
            if exitcode == ExitCode.APP_LOAD_ERROR:
                logger.error("%s could not load the app %s (its error is above); stopping "
                             "instead of respawning", child.who, self.app_path or
                             f"or run its initializer {self.initializer!r}")
                self.exit_code = ExitCode.APP_LOAD_ERROR
                self.failure = child.boot_error or f"{child.who} {description}"
                self._stop_requested = True
            elif not child.booted:
                self.crash_loop.died_at_boot(
                    child.boot_error or (child.kill and child.kill.error.message)
                    or f"{child.who} {description}")

    def _log_exit(self, child: Child, exit: WorkerExit) -> None:
        """One line per death: how, what it held and what became of it, its peak memory."""
        held = ", ".join([*(f"{i.id} ({i.task}) -> {i.status}" for i in exit.invocations),
                          *(f"{c.id} ({c.name})" for c in exit.calls)])
        message = f"{child.who} {exit.description}"
        if child.phase is Phase.RETIRING and child.retirement is not None:
            message += f" after retiring ({child.retirement.reason})"
        if held:
            message += f"; it held {held}"
        if exit.peak_memory:
            message += f"; peak memory {exit.peak_memory / 2**20:.0f} MiB"
        if exit.requested or (self._stop_requested and exit.exitcode == 0):
            logger.info("%s", message)
        else:
            logger.warning("%s", message)

    # -- scaling and reloading (in the loop) -------------------------------------------

    def _scale(self, processes: int) -> None:
        logger.info("scaling from %d to %d workers", self.processes, processes)
        self.processes = processes
        for child in self.workers.values():
            if child.info.slot > processes and not child.requested_stop:
                child.retirement = Retirement("scaled down", replace=False)
        self._set_title()

    def _signal_worker(self, pid: int, signum: int, why: str) -> None:
        child = next((c for c in self.workers.values() if c.info.pid == pid), None)
        if child is None:
            logger.warning("no worker with pid %d to send %s to (%s)", pid,
                           signal.Signals(signum).name, why)
            return
        logger.info("sending %s to %s: %s", signal.Signals(signum).name, child.who, why)
        child.signal(signum, why)

    def _reload(self) -> None:
        logger.info("reloading: replacing %d workers one by one", len(self.workers))
        for child in self.workers.values():
            if not child.requested_stop and child.retirement is None:
                child.retirement = Retirement("reload")

    def _set_title(self) -> None:
        if self._titled:
            set_title(f"pprunner supervisor: {self.name} [{self.processes} workers]")

    # -- signals, commands and the wake-up pipe -------------------------------------

    HANDLED_SIGNALS: tuple[signal.Signals, ...] = (
        signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)
        self._wake()

    def _command(self, command: Callable[[], None]) -> None:
        self._commands.append(command)
        self._wake()

    def _work_came(self) -> None:
        """The feed has work (a call submitted, a kill asked for). Hosted, in the
        host's thread between passes, it is handed out here and now: no wake-up
        and no second pass per call; anywhere else the loop is woken."""
        if (self._host_thread != threading.get_ident() or self._in_pass
                or self._stop_requested or self._ended):
            self._wake()
            return
        self._in_pass = True  # a call submitted by a callback of this hand-out wakes it
        try:
            self.feed.hand_out(self.workers.values())
        finally:
            self._in_pass = False

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe is already awake; closed: stopped
            os.write(self._wakeup_write, b"\0")

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wakeup_read, 512):
                pass
        for message in self._control.receive() if self._control else ():
            self._obey(message)
        while self._commands:
            self._commands.popleft()()
        while self._signals:
            signum = self._signals.popleft()
            getattr(self, f"handle_{signal.Signals(signum).name.lower()}")()

    def handle_sigterm(self) -> None:
        logger.info("SIGTERM: stopping gracefully (shutdown_timeout %.0f s)",
                    self.config.shutdown_timeout)
        self.request_stop()

    def handle_sigint(self) -> None:
        if self._stop_requested:
            logger.warning("second SIGINT: stopping at once")
            self._immediate = True
            return
        logger.info("SIGINT: stopping gracefully (shutdown_timeout %.0f s)",
                    self.config.shutdown_timeout)
        self.request_stop()

    def handle_sighup(self) -> None:
        self._reload()

    def handle_sigttin(self) -> None:
        self._scale(self.processes + 1)

    def handle_sigttou(self) -> None:
        self._scale(max(1, self.processes - 1))

    def _obey(self, message: str) -> None:
        """A command from ``pprunner scale`` (see :mod:`pprunner.control`)."""
        verb, _, argument = message.partition(" ")
        if verb != "scale":
            logger.warning("ignored unknown control command %r", message)
            return
        try:
            processes = int(argument)
            if processes < 1:
                raise ValueError("at least 1")
        except ValueError as exc:
            logger.warning("ignored control command %r: %s", message, exc)
            return
        self._scale(processes)

    # -- stopping ------------------------------------------------------------------

    def _shutdown(self, immediate: bool = False) -> None:
        """Stop every worker: let them finish, then SIGTERM, then SIGKILL."""
        self.feed.stopping()
        if not self.workers:
            return
        if self.stop_event is not None:
            self.stop_event.set()
        for child in self.workers.values():
            if child.phase is Phase.BOOTING:  # it holds nothing, and cannot hear a SIGTERM
                child.signal(signal.SIGKILL, "stopping while it was still booting")
            child.stop()
        deadline = time.monotonic() + self.config.shutdown_timeout
        graceful = not (immediate or self._immediate)
        if graceful:
            self._wait_for_exits(deadline)
        kill_why = "stopping at once"
        if self.workers and not self._immediate:
            if graceful:
                logger.warning("%d worker(s) still busy after %.1f s; sending SIGTERM",
                               len(self.workers), self.config.shutdown_timeout)
            for child in self.workers.values():
                child.signal(signal.SIGTERM,
                             f"still busy after shutdown_timeout "
                             f"({self.config.shutdown_timeout:g} s)" if graceful
                             else "stopping after an error")
            self._wait_for_exits(time.monotonic() + TERMINATE_GRACE)
            kill_why = f"still running {TERMINATE_GRACE:g} s after SIGTERM"
        for child in self.workers.values():
            child.signal(signal.SIGKILL, kill_why)
        self._wait_for_exits(None)
        if self._immediate and self.exit_code == ExitCode.OK:
            self.exit_code = ExitCode.INTERRUPTED

    def _stopping(self) -> bool:
        """A stop was asked for, or a stop signal is queued and not yet handled."""
        return self._stop_requested or any(s in (signal.SIGTERM, signal.SIGINT)
                                           for s in self._signals)

    def _stop_without_backend(self, error: BackendError) -> None:
        """Stop although the backend cannot be reached (it gave up waiting because a
        stop was asked for): end the workers without handing back what they run.

        Their invocations stay owned by runners that no longer heartbeat, so
        another supervisor, or this one's next start, takes them back after
        ``dead_after``, as after a crash.
        """
        logger.error("stopping while the backend is unreachable (%s): %d worker(s) stop "
                     "without handing back what they run; it is taken back after dead_after "
                     "(%.0f s)", error, len(self.workers), self.config.dead_after)
        self.exit_code = ExitCode.BACKEND_ERROR
        self._backend_lost = True
        children = list(self.workers.values())
        for child in children:
            child.phase = Phase.STOPPING
            child.signal(signal.SIGTERM, "stopping while the backend is unreachable")
        deadline = time.monotonic() + TERMINATE_GRACE
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                child.signal(signal.SIGKILL, f"still running {TERMINATE_GRACE:g} s after SIGTERM")
                child.process.join()
        self.workers.clear()

    def _wait_for_exits(self, deadline: float | None) -> None:
        while self.workers:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            if self._while_stopping is not None:
                self._while_stopping()
                left = STOP_TICK if left is None else min(left, STOP_TICK)
            self._wait(left)
            self._reap(self._exited)
            if self._immediate and deadline is not None:
                return

    def _close(self) -> None:
        if self.config.health_file:
            with contextlib.suppress(OSError):  # a stopped supervisor is not alive
                os.unlink(self.config.health_file)
        self.feed.close([self.id, *self.workers], self._backend_lost)
        if self._lifeline is not None:
            for end in self._lifeline:
                end.close()
            self._lifeline = None
        if self.stop_event is not None:
            self.stop_event.close()
            self.stop_event = None
        self._selector.close()
        if self._control is not None:
            self._control.close()
            self._control = None
        for fd in (self._wakeup_read, self._wakeup_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        # a later stop()/scale_to() from another thread must not write to (or a second
        # close close) a descriptor number the process has since reused: -1 fails quietly
        self._wakeup_read = self._wakeup_write = -1
        self.plugins.hook.pprunner_supervisor_stopped(supervisor=self.view)


@attrs.frozen
class WorkerState:
    """One worker as its supervisor sees it at one moment (:meth:`SupervisorView.workers`)."""

    runner: RunnerInfo
    phase: Phase
    #: push mode: the call it runs now (pull mode: None; its invocations are in the backend)
    call: Call | None
    #: its job waits inside ``lend_slot()``, its slot lent to another worker
    waiting: bool


class SupervisorView:
    """What plugins see of a supervisor (``pprunner_supervisor_started``/``_stopping``):
    who it is and what it runs, and the controls that are safe from any thread."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    @property
    def id(self) -> str:
        return self._supervisor.id

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def processes(self) -> int:
        """The configured worker count (what ``scale_to`` last set)."""
        return self._supervisor.processes

    @property
    def config(self) -> Config:
        return self._supervisor.config

    @property
    def app(self) -> App | None:
        """The app in pull mode; None in push mode."""
        return self._supervisor.app

    @property
    def backend(self) -> Backend | None:
        return self._supervisor.backend

    @property
    def plugins(self) -> Plugins:
        """Its plugin manager: a plugin may register more implementations here (in
        :func:`~pprunner.hookspecs.pprunner_supervisor_booting`, so that they take part
        from the first worker on)."""
        return self._supervisor.plugins

    def runners(self) -> list[RunnerInfo]:
        """The supervisor and its live workers."""
        return self._supervisor.live_runners()

    def workers(self) -> list[WorkerState]:
        """Its live worker processes, each with its phase and, in push mode, its call."""
        children = list(self._supervisor.workers.values())  # a copy: asked from any thread
        return [WorkerState(c.info, c.phase, c.call, c.waiting)
                for c in children if c.process.is_alive()]

    @property
    def queued_calls(self) -> int:
        """Push mode: calls waiting for an idle worker (pull mode: 0; the backend
        holds that queue)."""
        feed = self._supervisor.feed
        return feed.queued if isinstance(feed, Dispatcher) else 0

    def scale_to(self, processes: int) -> None:
        self._supervisor.scale_to(processes)

    def reload(self) -> None:
        self._supervisor.reload()

    def signal_worker(self, pid: int, signum: int, why: str) -> None:
        self._supervisor.signal_worker(pid, signum, why)

    def request_stop(self) -> None:
        self._supervisor.request_stop()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        return self._supervisor.wait_until_ready(timeout)

    def __repr__(self) -> str:
        return f"<SupervisorView {self.id} processes={self.processes}>"
