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
import select
import selectors
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from . import channel, health, held, template
from . import config as config_module
from .backend import Backend
from .child import Child, Phase
from .config import Config
from .consuming import HostJob
from .control import ControlSocket
from .dispatch import Dispatcher
from .errors import BackendError, ConfigError, PprunnerError
from .exitcodes import ExitCode
from .held import HeldJob
from .hostfeed import HostFeed
from .invocation import ErrorInfo, Invocation, RunnerInfo, RunnerKind
from .jobs import Call
from .plugins import Plugins, get_plugin_manager
from .pool import Pool, new_runner_id
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
#: seconds to wait for the worker holding a job the host's broker redelivered to end
#: (its connection closed as it died), so that its death is settled before the verdict
REDELIVERY_GRACE = 1.0
#: what the loop's selector says woke it: the wake-up pipe or the control socket, a
#: worker's pipe (its reports), a worker's process sentinel (it exited)
_WAKEUP, _REPORTS, _EXITED = "wakeup", "reports", "exited"


class Feed(Protocol):
    """Where the supervisor's workers get their jobs (see the module docstring)."""

    @property
    def backend(self) -> Backend | None: ...
    #: how often the loop must look at the feed whatever happens; None: no need
    @property
    def tick(self) -> float | None: ...
    #: what workers run may name functions of the supervisor's __main__
    calls_from_main: bool
    #: what each worker runs as its host's consumer (host-consumed mode), else None
    consumer: Call | None
    #: seconds a worker's report may wait before the loop reads it, once one was read
    #: (0: at once); deaths, signals and commands are seen at once all the same
    report_delay: float
    def app_path(self) -> str | None: ...
    def boot(self, pool: Pool, stopping: Callable[[], bool], wake: Callable[[], None],
             plugins: Plugins) -> None: ...
    def heartbeat(self, plugins: Plugins, runners: Sequence[RunnerInfo]) -> None: ...
    def on_done(self, child: Child, message: channel.Done) -> None: ...
    def on_note(self, child: Child, message: channel.Note) -> None: ...
    def on_cache_request(self, child: Child, message: channel.CacheRequest) -> None: ...
    def job_waiting(self, child: Child, waiting: bool) -> None: ...
    def drop_redelivery(self, job_id: str) -> bool: ...
    def hand_out(self, pool: Pool) -> None: ...
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
    and the Celery and RQ plugins use it). Host-consumed mode:
    ``Supervisor(feed=HostFeed(consumer, settle), config=c, processes=4)``;
    each worker runs a host's own consumer (:mod:`pprunner.consuming`).

    ``run()`` blocks and handles SIGTERM/SIGINT/SIGHUP/SIGTTIN/SIGTTOU itself
    (the CLI uses it); ``start()``/``stop()`` run the same loop in a
    background thread for embedding and tests; ``with Supervisor(app,
    processes=2):`` does both. To run tasks in this process instead (pull mode
    only), use :class:`~pprunner.inline.InlineSupervisor`, or :meth:`for_app`,
    which picks it when the app's ``processes`` setting is 0.

    :param initializer: called in every worker before it reports ready (a
        host's bootstrap); if it raises, the supervisor stops with exit 4
        instead of respawning.
    :param prepare: what every worker builds alike before its initializer (import
        the host's app): once in the template the workers are forked from, so a new
        worker starts with it built (:attr:`pprunner.spawn.WorkerSpec.prepare`).
    :param plugins: plugins to register besides the entry-point ones: a
        host adapter's own hook implementations. A module is registered here
        and, by name, in every worker (its worker-side hooks); any other object
        only here.
    """

    @classmethod
    def for_app(cls, app: App, processes: int | None = None, **options: Any) -> Supervisor:
        """The supervisor ``app``'s settings ask for: an
        :class:`~pprunner.inline.InlineSupervisor` when ``processes`` (by default the
        app's own setting) is 0, else one with that many worker processes."""
        count = app.config.processes if processes is None else processes
        if count == 0:
            from .inline import InlineSupervisor  # inline mode is its own, small class

            return InlineSupervisor(app, **options)
        return cls(app, count, **options)

    def __init__(self, app: App | None = None, processes: int | None = None, *,
                 dispatcher: Dispatcher | None = None, feed: HostFeed | None = None,
                 config: Config | None = None,
                 initializer: Call | None = None, prepare: Call | None = None,
                 plugins: Sequence[object] = (),
                 burst: bool = False, progress: bool = False,
                 options: argparse.Namespace | None = None) -> None:
        if [app, dispatcher, feed].count(None) != 2:
            raise ConfigError("a Supervisor needs one of an app (pull mode), a dispatcher "
                              "(push mode) or a host feed (host-consumed mode)")
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
        processes = self.config.processes if processes is None else processes
        if processes < 1 and type(self) is Supervisor:
            raise ConfigError(
                f"a Supervisor runs at least one worker process, got processes="
                f"{processes}; to run tasks in this process use InlineSupervisor(app) "
                f"(or Supervisor.for_app(app), which picks it for processes=0)")
        self.id = new_runner_id()
        self.burst = burst
        self.options = options
        self.initializer = initializer
        #: a host's preparation of every worker (:attr:`pprunner.spawn.WorkerSpec.prepare`)
        self.prepare = prepare
        self.feed: Feed = (BackendFeed(app, self.id, burst=burst, progress=progress)
                           if app is not None else dispatcher or feed)  # type: ignore[assignment]
        # a template's workers are passed their pipes as spawned ones are
        self._mp: Any = multiprocessing.get_context(
            "spawn" if self.config.start_method == "template" else self.config.start_method)
        self.pool = Pool(processes, supervisor_id=self.id, config=self.config,
                         plugins=self.plugins, mp=self._mp, spec_for=self._spec_for,
                         watch=self._watch, unwatch=self._unwatch)
        #: the one receiver of each message a worker sends (see :mod:`pprunner.channel`)
        self._receivers: dict[type[Any], Callable[[Child, Any], None]] = {
            channel.Hello: Child.on_hello, channel.Unreadable: self._on_unreadable,
            channel.Ready: Child.on_ready, channel.BootFailed: Child.on_boot_failed,
            channel.Started: Child.on_started, channel.Finished: Child.on_finished,
            channel.Recycle: Child.on_recycle, channel.Waiting: self._on_waiting,
            channel.Done: self.feed.on_done, channel.Note: self.feed.on_note,
            channel.CacheRequest: self.feed.on_cache_request,
            channel.RedeliveryCheck: self._on_redelivery_check}
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
        #: the same but the workers' pipes: waited on while reports may wait
        #: (:attr:`Feed.report_delay`), until ``_reports_wait_until``
        self._urgent = selectors.DefaultSelector()
        self._urgent.register(self._wakeup_read, selectors.EVENT_READ, _WAKEUP)
        self._reports_wait_until = 0.0
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
        self.stop_event: StopFlag | None = None
        self._lifeline: tuple[Any, Any] | None = None
        self._control: ControlSocket | None = None
        self.app_path: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.name} processes={self.processes}>"

    @property
    def processes(self) -> int:
        """The configured worker count (what ``scale_to`` last set)."""
        return self.pool.processes

    @property
    def workers(self) -> dict[str, Child]:
        """The worker table, by runner id (the pool's; read, never change it)."""
        return self.pool.workers

    @property
    def name(self) -> str:
        if self.app is not None:
            return self.app.name
        return "host consumer" if self.feed.consumer is not None else "push mode"

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

    def _reload(self) -> None:
        template.retire(self.id)  # new workers fork from a template that imports afresh
        self.pool.reload()

    def signal_worker(self, pid: int, signum: int, why: str) -> None:
        """Send ``signum`` to the worker whose process is ``pid``, if it is one of
        this supervisor's: a host ending the job it runs (Celery's
        ``revoke(terminate=True)``). Safe from any thread: the loop sends it,
        so the worker's end is described with ``why`` as the supervisor's doing,
        and the job it held ends as any job whose worker dies (``Lost``)."""
        self._command(lambda: self.pool.signal_worker(pid, signum, why))

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
        return [me, *self.pool.runners()]

    # -- boot ----------------------------------------------------------------------

    def _prepare(self) -> None:
        """Tell the plugins a supervisor is booting, then ready the feed; if either
        fails, the plugins hear it stopped (nothing else was started yet)."""
        try:
            self.plugins.hook.pprunner_supervisor_booting(supervisor=self.view)
            self.feed.boot(self.pool, self._stopping, self._work_came, self.plugins)
        except BaseException:
            self.plugins.hook.pprunner_supervisor_stopped(supervisor=self.view)
            raise

    def _boot(self) -> None:
        self._prepare()
        try:
            self._start_helpers()
            for slot in range(1, self.processes + 1):
                self.pool.spawn(slot)
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
        for selector in (self._selector, self._urgent):
            selector.register(self._control.socket, selectors.EVENT_READ, _WAKEUP)

    def _spec_for(self, runner_id: str, slot: int, channel_end: Any) -> WorkerSpec:
        """What a new worker starts from (the pool spawns it)."""
        assert self._lifeline is not None
        return WorkerSpec(
            runner_id=runner_id, slot=slot, supervisor_id=self.id, app_path=self.app_path,
            settings=self.config.to_dict(), stop_event=self.stop_event,
            lifeline=self._lifeline[0], lifeline_writer_fd=self._lifeline[1].fileno(),
            channel=channel_end, initializer=self.initializer, prepare=self.prepare,
            plugin_modules=self._plugin_modules, plugin_entries=self.plugins.entries,
            calls_from_main=self.feed.calls_from_main, consumer=self.feed.consumer,
            held=HeldJob() if self.feed.consumer is not None and held.supported() else None)

    def _watch(self, child: Child) -> None:
        self._selector.register(child.connection, selectors.EVENT_READ, (child, _REPORTS))
        for selector in (self._selector, self._urgent):
            selector.register(child.process.sentinel, selectors.EVENT_READ, (child, _EXITED))

    def _unwatch(self, child: Child) -> None:
        self._selector.unregister(child.connection)
        for selector in (self._selector, self._urgent):
            selector.unregister(child.process.sentinel)

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
                         self.pool.crash_loop.cause)

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
        self.pool.enforce_limits()
        self._reap(self._exited)
        if self._stop_requested:
            return True  # the next pass stops, after a heartbeat if one is due
        if self.pool.crash_loop.given_up():
            self.exit_code = ExitCode.CRASH_LOOP
            self.failure = f"workers keep dying before they boot: {self.pool.crash_loop.cause}"
            self._stop_requested = True
            return True
        self.pool.tend()
        self.feed.hand_out(self.pool)
        return True

    def _drained(self) -> bool:
        """Burst mode: the queue is drained, and every worker has booted.

        A run whose workers cannot start failed, whatever the queue holds: it
        goes on until that shows (an app that cannot load, a crash loop) and
        exits with that code, not 0.
        """
        return self.pool.all_booted() and self.feed.drained()

    def _next_tick(self) -> float:
        """Seconds until the loop must look again: a heartbeat, a deadline, a respawn."""
        now = time.monotonic()
        tick = min(self.config.heartbeat_interval, self.feed.tick or float("inf"))
        soonest = self.pool.next_moment()
        return max(0.0, min(tick, tick if soonest is None else soonest - now))

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a worker exits or reports, a signal or command comes, or ``timeout``."""
        self._exited = []
        woken = reported = False
        for key, _events in self._select(timeout):
            if key.data == _WAKEUP:
                woken = True
                continue
            child, what = key.data
            if what == _REPORTS:
                self._receive(child)
                reported = True
            else:
                self._exited.append(child)
        if reported and self.feed.report_delay:
            self._reports_wait_until = time.monotonic() + self.feed.report_delay
        if woken or self._commands or self._signals:
            self._drain_wakeups()
            if not self._stop_requested:  # a submitted call goes out now, not after the pass
                self.feed.hand_out(self.pool)

    def _select(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        """What is ready within ``timeout``. While reports may wait, only a death, the
        wake-up pipe or the timeout ends the wait; everything ready is returned then,
        reports included. A host-consumed worker reports each job's start and end:
        read in batches, they cost the loop a pass, and each worker a wake-up of the
        supervisor, per batch rather than per report (a deadline ends the wait too, so
        a worker's job is never killed at its limit for want of reading its end)."""
        left = self._reports_wait_until - time.monotonic()
        if left > 0:
            if timeout is not None and timeout <= left:
                self._urgent.select(timeout)
                return self._selector.select(0)
            if self._urgent.select(left):
                return self._selector.select(0)
            timeout = None if timeout is None else timeout - left
        return self._selector.select(timeout)

    def _receive(self, child: Child) -> None:
        """Take in a worker's reports; an idle one is handed its next call at once (push
        mode), before the rest of the pass, so a busy pool's workers barely wait."""
        booted = child.booted
        for message in child.receive():
            receiver = self._receivers.get(type(message))
            if receiver is None:
                logger.warning("%s sent %s, which only a worker receives", child.who,
                               channel.kind(message))
            else:
                receiver(child, message)
        if child.booted and not booted:
            self.pool.crash_loop.booted()
            self.plugins.hook.pprunner_worker_ready(runner=child.info)
            if self.pool.booted() >= self.processes:
                self._ready.set()
        if child.idle and not self._stop_requested:
            self.feed.hand_out(self.pool)

    def _on_unreadable(self, child: Child, message: channel.Unreadable) -> None:
        """The call it was handed does not unpickle in the worker: that call fails."""
        done = child.held_call_failed(message.error)
        if done is not None:
            self.feed.on_done(child, done)

    def _on_waiting(self, child: Child, message: channel.Waiting) -> None:
        """Its job blocks (or stops blocking) on other jobs: while it does, its slot
        is lent (:meth:`Pool.target`)."""
        child.waiting = message.waiting
        self.feed.job_waiting(child, message.waiting)

    def _on_redelivery_check(self, child: Child, message: channel.RedeliveryCheck) -> None:
        """The host's broker delivered a job to ``child`` again by itself: drop it if a
        dead worker's settling already ended it. The broker redelivers once the dead
        worker's connection closed, as its process ends: that worker is reaped (its
        jobs settled) before the answer, waiting a moment for one whose end is not
        visible yet."""
        dying = [h.process.sentinel for h in self.pool.holding_job(message.job_id)
                 if h is not child]
        if dying:
            select.select(dying, [], [], REDELIVERY_GRACE)
        self._reap(self.pool.exited())
        child.send(channel.RedeliveryVerdict(message.job_id,
                                             self.feed.drop_redelivery(message.job_id)))

    def _heartbeat(self) -> None:
        self.feed.heartbeat(self.plugins, self.live_runners())
        if self.config.health_file:
            booted = self.pool.serving()
            health.write(self.config.health_file, {
                "pid": os.getpid(), "supervisor": self.id, "processes": self.processes,
                "booted": booted, "ready": booted >= self.processes})

    def _reap(self, candidates: Iterable[Child] | None = None) -> None:
        """Handle every worker (of ``candidates``: those whose sentinel fired) that has
        exited: what it held goes back, tell the plugins."""
        for child in list(self.pool if candidates is None else candidates):
            if child.process.exitcode is None or child not in self.pool:
                continue  # alive, or reaped already (before a redelivery's verdict)
            self._receive(child)  # what it said just before it exited
            self.pool.remove(child)
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
                jobs=tuple(h for h in held if isinstance(h, HostJob)),
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
            elif (not child.said_hello and not child.requested_stop and exitcode is not None
                  and exitcode >= 0):
                self._cannot_start(child, description)
            elif not child.booted:
                self.pool.crash_loop.died_at_boot(
                    child.boot_error or (child.kill and child.kill.error.message)
                    or f"{child.who} {description}")

    def _cannot_start(self, child: Child, description: str) -> None:
        """A worker exited before its own code ran: in its start method's preparation
        (spawn and forkserver re-import the parent's ``__main__`` and unpickle the
        worker's spec), which every worker repeats the same way. Respawning would
        only repeat it (a script without its ``__main__`` guard would crash-loop):
        stop, saying what to do."""
        self.failure = f"{child.who} {description} before it could start"
        script = getattr(sys.modules["__main__"], "__file__", None)
        if script and self.feed.calls_from_main and self.config.start_method != "fork":
            self.failure += (
                f": it failed re-importing the main script {script}, as every worker "
                f"started with {self.config.start_method} would. Keep what the script runs "
                f"under `if __name__ == \"__main__\":`, or start the workers with fork "
                f"(mp_context=multiprocessing.get_context(\"fork\"))")
        logger.error("%s; stopping instead of respawning (the worker's traceback is above)",
                     self.failure)
        self.exit_code = ExitCode.APP_LOAD_ERROR
        self._stop_requested = True

    def _log_exit(self, child: Child, exit: WorkerExit) -> None:
        """One line per death: how, what it held and what became of it, its peak memory."""
        held = ", ".join([*(f"{i.id} ({i.task}) -> {i.status}" for i in exit.invocations),
                          *(f"{c.id} ({c.name})" for c in [*exit.calls, *exit.jobs])])
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
        self.pool.scale(processes)
        self._set_title()

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
            self.feed.hand_out(self.pool)
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
            self._handle_signal(self._signals.popleft())

    def _handle_signal(self, signum: int) -> None:
        """Call ``handle_<signal name>``; a signal a host routed here that has no such
        method is logged and otherwise ignored."""
        name = signal.Signals(signum).name
        handler = getattr(self, f"handle_{name.lower()}", None)
        if handler is None:
            logger.warning("%s: the supervisor has no handler for it; ignored", name)
        else:
            handler()

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
        self.pool.reload()

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
        self.pool.stop_all()
        deadline = time.monotonic() + self.config.shutdown_timeout
        graceful = not (immediate or self._immediate)
        if graceful:
            self._wait_for_exits(deadline)
        kill_why = "stopping at once"
        if self.workers and not self._immediate:
            if graceful:
                logger.warning("%d worker(s) still busy after %.1f s; sending SIGTERM",
                               len(self.workers), self.config.shutdown_timeout)
            self.pool.signal_all(signal.SIGTERM,
                                 f"still busy after shutdown_timeout "
                                 f"({self.config.shutdown_timeout:g} s)" if graceful
                                 else "stopping after an error")
            self._wait_for_exits(time.monotonic() + TERMINATE_GRACE)
            kill_why = f"still running {TERMINATE_GRACE:g} s after SIGTERM"
        self.pool.signal_all(signal.SIGKILL, kill_why)
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
        self.pool.abandon("stopping while the backend is unreachable", TERMINATE_GRACE)

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
        template.retire(self.id)
        if self._lifeline is not None:
            for end in self._lifeline:
                end.close()
            self._lifeline = None
        if self.stop_event is not None:
            self.stop_event.close()
            self.stop_event = None
        self._selector.close()
        self._urgent.close()
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
        return [WorkerState(c.info, c.phase, c.call, c.waiting)
                for c in self._supervisor.pool if c.process.is_alive()]

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
