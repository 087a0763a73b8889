"""The supervisor: keeps N worker processes alive and nothing they own lost.

One loop (:meth:`Supervisor._loop`) waits on every worker's process sentinel
and a wake-up pipe, so a death is an event seen at once, not found at the
next poll. Each iteration: heartbeat the live runners, dispatch queued
signals, reap the dead (reroute what they owned, tell the plugins), respawn
to the configured count. Signal handlers only queue the signal and write to
the wake-up pipe; everything else happens in the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for_ready
from multiprocessing.managers import SyncManager
from typing import Any

from . import health, runtime
from .backend import purge_finished
from .control import ControlSocket
from .errors import BackendError, ConfigError, PprunnerError, TimeLimitExceeded
from .exitcodes import ExitCode
from .invocation import ErrorInfo, RunnerInfo, RunnerKind
from .pool import Child, CrashLoop
from .proctitle import set_title
from .progress import BurstProgress
from .spawn import (
    WorkerExit,
    WorkerSpec,
    describe_exit,
    main_module_hidden,
    signals_blocked,
)
from .task import App
from .worker import Worker, WorkerContext, guard_helper_process

logger = logging.getLogger("pprunner.supervisor")

#: seconds a straggler gets between SIGTERM (hand back your invocation) and SIGKILL
TERMINATE_GRACE = 5.0
#: longest pause between burst-mode checks of the queue
BURST_TICK = 0.05
#: how often the supervisor deletes what finished over ``keep_finished`` ago (more often
#: when keep_finished is short), and the longest one such purge may hold up the loop
PURGE_EVERY, PURGE_SLICE = 60.0, 0.2


def new_runner_id() -> str:
    return os.urandom(6).hex()


def _manager_address(supervisor_id: str) -> str | None:
    """Where the runner-cache manager listens: on Linux an abstract socket, which
    leaves no ``pymp-*`` folder behind in the temp directory when the supervisor is
    SIGKILLed (the manager's authentication key still guards it); elsewhere the
    default, a socket in such a folder."""
    return f"\0pprunner-{supervisor_id}" if sys.platform.startswith("linux") else None


class Supervisor:
    """Runs ``processes`` persistent workers for ``app``.

    ``run()`` blocks and handles SIGTERM/SIGINT itself (the CLI uses it);
    ``start()``/``stop()`` run the same loop in a background thread for
    embedding and tests; ``with Supervisor(app, processes=2):`` does both.
    ``processes=0`` runs tasks inline, in this process.
    """

    def __init__(self, app: App, processes: int | None = None, *, burst: bool = False,
                 progress: bool = False, options: argparse.Namespace | None = None) -> None:
        self.app = app
        self.config = app.config
        self.processes = self.config.processes if processes is None else processes
        if self.processes < 0:
            raise ConfigError(f"processes must be >= 0, got {self.processes}")
        self.id = new_runner_id()
        self.burst = burst
        self.options = options
        self.workers: dict[str, Child] = {}
        self.crash_loop = CrashLoop(self.config.crash_loop_period)
        self._next_recovery = 0.0
        self._next_purge = 0.0
        self._next_burst_check = 0.0
        self.exit_code = ExitCode.OK
        self.started_at = time.time()
        self._progress = BurstProgress(app.backend, enabled=progress) if burst else None
        self._signals: deque[int] = deque()
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        self._stop_requested = False
        self._immediate = False
        #: the backend was unreachable when stopping: nothing more is asked of it
        self._backend_lost = False
        #: how the app's producers wait out outages, restored when the supervisor ends
        self._producer_patience: Callable[[float], bool] = lambda outage_s: True
        self._thread: threading.Thread | None = None
        self._inline: Worker | None = None
        self._mp: Any = multiprocessing.get_context(self.config.start_method)
        self.stop_event: Any = None
        self.runner_cache: Any = None
        self._manager: SyncManager | None = None
        self._lifeline: tuple[Any, Any] | None = None
        self._control: ControlSocket | None = None
        self.app_path: str | None = None

    def __repr__(self) -> str:
        return f"<Supervisor {self.id} app={self.app.name} processes={self.processes}>"

    @property
    def max_parallel_slots(self) -> int:
        """How many invocations can run at once: one per worker process."""
        return max(self.processes, 1)

    @property
    def backend(self) -> Any:
        return self.app.backend

    # -- public control ------------------------------------------------------------

    def run(self) -> ExitCode:
        """Supervise until stopped (or, in burst mode, until the queue is drained).

        In the main thread it handles SIGTERM and SIGINT itself (first:
        graceful stop; second SIGINT: stop at once) and restores the previous
        handlers afterwards; elsewhere stop it with :meth:`request_stop`.
        """
        previous = {}
        if threading.current_thread() is threading.main_thread():
            handler = self._inline_signal if self.processes == 0 else self._queue_signal
            handled = [signal.SIGTERM, signal.SIGINT]
            if self.processes:
                handled += [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU]
            previous = {sig: signal.signal(sig, handler) for sig in handled}
            set_title(f"pprunner supervisor: {self.app.name} [{self.processes} workers]")
        try:
            self._boot()
            self._supervise()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return self.exit_code

    def start(self) -> Supervisor:
        """Boot the workers and supervise them from a background thread."""
        self._boot()
        self._thread = threading.Thread(target=self._supervise, name="pprunner-supervisor",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, *, immediate: bool = False, timeout: float | None = None) -> ExitCode:
        """Ask for a stop (graceful unless ``immediate``) and wait until it is done."""
        self._immediate = self._immediate or immediate
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.exit_code

    def scale_to(self, processes: int) -> None:
        """Grow or shrink the pool while it runs; shrinking retires workers gracefully."""
        if processes < 1 or self.processes == 0:
            raise ConfigError(f"cannot scale to {processes} workers (at least 1, and not inline)")
        logger.info("scaling from %d to %d workers", self.processes, processes)
        self.processes = processes
        for child in self.workers.values():
            if child.info.slot > processes and not child.retiring:
                child.retire_reason, child.replace = "scaled down", False
        self._wake()

    def reload(self) -> None:
        """Replace every worker, one at a time, by one that imports the code afresh."""
        logger.info("reloading: replacing %d workers one by one", len(self.workers))
        for child in self.workers.values():
            if not child.retiring and child.retire_reason is None:
                child.retire_reason = "reload"
        self._wake()

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._inline is not None:
            self._inline.request_stop()
        self._wake()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def live_runners(self) -> list[RunnerInfo]:
        """The supervisor and each worker whose process is alive by OS-level check."""
        me = RunnerInfo(id=self.id, kind=RunnerKind.SUPERVISOR if self.processes else
                        RunnerKind.INLINE, pid=os.getpid(), supervisor=self.id,
                        started_at=self.started_at)
        return [me] + [c.info for c in self.workers.values() if c.process.is_alive()]

    # -- boot ----------------------------------------------------------------------

    def _boot(self) -> None:
        backend = self.backend
        if self.processes and not backend.supports_processes:
            raise ConfigError(
                f"the backend {backend.url!r} keeps invocations inside one process and cannot "
                "be shared with worker processes; use processes=0 (--inline) or a backend "
                "such as sqlite://")
        self.app.codec.check()  # an unknown or missing serializer fails here, not in a worker
        # sockets and doorbell folders of SIGKILLed processes would pile up otherwise; and
        # a runtime folder that is not this user's alone stops the boot here
        runtime.prune()
        self._producer_patience = backend.keep_waiting
        backend.keep_waiting = lambda outage_s: not self._stopping()
        try:
            backend.counts()
        except PprunnerError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot use backend {backend.url!r}: {exc}") from exc
        if self.processes == 0:
            logger.info("running inline (no worker processes), backend %s", backend.url)
        else:
            try:
                self._start_helpers()
                for slot in range(1, self.processes + 1):
                    self._spawn(slot)
            except BaseException:
                self._shutdown(immediate=True)
                self._close()
                raise
            logger.info("supervisor %s started %d workers (%s), backend %s", self.id,
                        self.processes, self.config.start_method, backend.url)
        self.app.plugins.hook.pprunner_supervisor_started(supervisor=self, options=self.options)

    def _start_helpers(self) -> None:
        """The stop event, the lifeline pipe and the runner-cache manager."""
        self.app_path = self.app.locate()  # fails early for an app workers cannot import
        self.stop_event = self._mp.Event()
        reader, writer = self._mp.Pipe(duplex=False)
        self._lifeline = (reader, writer)
        self._manager = SyncManager(address=_manager_address(self.id), ctx=self._mp)
        with signals_blocked(), main_module_hidden():
            self._manager.start(guard_helper_process,
                                (reader, writer.fileno(), self.config.start_method))
        self.runner_cache = self._manager.dict()
        self._control = ControlSocket(self.id)

    def _spawn(self, slot: int) -> Child:
        assert self._lifeline is not None and self.app_path is not None
        runner_id = new_runner_id()
        ours, theirs = self._mp.Pipe()
        spec = WorkerSpec(
            runner_id=runner_id, slot=slot, supervisor_id=self.id, app_path=self.app_path,
            settings=self.config.to_dict(), stop_event=self.stop_event,
            runner_cache=self.runner_cache, lifeline=self._lifeline[0],
            lifeline_writer_fd=self._lifeline[1].fileno(), channel=theirs)
        process = self.app.plugins.hook.pprunner_spawn_worker(
            spec=spec, start_method=self.config.start_method)
        theirs.close()  # the child has its own copy now
        info = RunnerInfo(id=runner_id, kind=RunnerKind.WORKER, pid=process.pid,
                          supervisor=self.id, slot=slot)
        child = self.workers[runner_id] = Child(info, process, ours)
        self.app.plugins.hook.pprunner_worker_started(runner=info)
        logger.debug("spawned worker %d as runner %s, pid %s", slot, runner_id, process.pid)
        return child

    # -- the loop ------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            if self.processes == 0:
                self._run_inline()
            else:
                self._loop()
                self._shutdown()
        except BaseException as exc:
            if isinstance(exc, BackendError) and self._stopping():
                self._stop_without_backend(exc)  # it stopped waiting as a stop was asked
                return
            self.exit_code = ExitCode.INTERNAL_ERROR
            self._shutdown(immediate=True)
            raise
        finally:
            self._close()

    def _loop(self) -> None:
        next_beat = 0.0
        while True:
            # workers' reports wake the loop often; heartbeats keep their own pace
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + self.config.heartbeat_interval
            if self._stop_requested or self._burst_done():
                return
            self._wait(self._next_tick())
            self._enforce_limits()
            self._reap()
            if self._stop_requested:
                continue
            if self.crash_loop.given_up():
                logger.error("no worker could be kept running for %.0f s; the last one died "
                             "before booting: %s", self.config.crash_loop_period,
                             self.crash_loop.cause)
                self.exit_code = ExitCode.CRASH_LOOP
                self._stop_requested = True
                continue
            self._recycle()
            self._respawn()

    def _next_tick(self) -> float:
        """Seconds until the loop must look again: a heartbeat, a deadline, a respawn."""
        now = time.monotonic()
        tick = min(self.config.heartbeat_interval, BURST_TICK) if self.burst \
            else self.config.heartbeat_interval
        moments = [c.deadline(self.config.boot_timeout) for c in self.workers.values()]
        if len(self.workers) < self.processes:
            moments.append(self.crash_loop.next_spawn)
        soonest = min((m for m in moments if m is not None), default=now + tick)
        return max(0.0, min(tick, soonest - now))

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a worker exits or reports, a signal comes, or ``timeout``."""
        children = list(self.workers.values())
        ready = set(wait_for_ready([*(c.process.sentinel for c in children),
                                    *(c.connection for c in children), self._wakeup_read,
                                    *([self._control.socket] if self._control else [])], timeout))
        for child in children:
            if child.connection in ready:
                booted = child.booted
                child.receive()
                if child.booted and not booted:
                    self.crash_loop.booted()
        self._drain_wakeups()

    def _enforce_limits(self) -> None:
        """Kill workers past their boot timeout or their invocation's hard time limit."""
        now = time.monotonic()
        for child in self.workers.values():
            if not child.booted and now - child.spawned > self.config.boot_timeout:
                child.kill_for(ErrorInfo("BootTimeout", f"did not report ready within "
                                         f"{self.config.boot_timeout:g} s"))
            for running in child.running:
                if running.deadline is not None and now > running.deadline:
                    limit = running.deadline - running.started
                    child.kill_for(ErrorInfo("TimeLimitExceeded", f"{running.task} exceeded "
                                             f"its hard time limit of {limit:g} s"),
                                   running.task)
        if any(c.booted and c.process.is_alive() for c in self.workers.values()):
            self.crash_loop.healthy()

    def _recycle(self) -> None:
        """Replace workers that should retire, one at a time, without losing capacity.

        The replacement is started first; the old worker is told to retire
        only once the new one has booted, and it finishes what it runs. One
        replacement boots at a time; a retiring worker still busy with a long
        invocation does not hold up the others, and idle workers go first.
        """
        if any(not c.booted for c in self.workers.values()):
            return
        candidates = [c for c in self.workers.values() if c.retire_reason and not c.retiring]
        if not candidates:
            return
        child = min(candidates, key=lambda c: bool(c.running))
        if not child.replace:
            logger.info("%s retires: %s", child.who, child.retire_reason)
            child.retire()
        elif child.replacement is None or child.replacement not in self.workers:
            if self.crash_loop.may_spawn():
                child.replacement = self._spawn(child.info.slot).info.id
        elif self.workers[child.replacement].booted:
            logger.info("%s retires (%s); worker %s takes its place", child.who,
                        child.retire_reason, child.replacement)
            child.retire()

    def _heartbeat(self) -> None:
        self.app.plugins.hook.pprunner_heartbeat(backend=self.backend,
                                                 runners=self.live_runners(), at=time.time())
        if self.config.health_file:
            booted = sum(c.booted and not c.retiring for c in self.workers.values())
            health.write(self.config.health_file, {
                "pid": os.getpid(), "supervisor": self.id, "processes": self.processes,
                "booted": booted, "ready": booted >= self.processes})
        self._recover_lost_runners()
        self._purge_finished()

    def _recover_lost_runners(self) -> None:
        """Take back what runners of vanished supervisors held (a host lost, a SIGKILL
        of a whole process group), once their heartbeats are ``dead_after`` old.

        The backend makes each recovery atomic and conditional, so when several
        supervisors look at once exactly one acts, and a runner whose heartbeat
        came back keeps what it runs.
        """
        now = time.monotonic()
        if now < self._next_recovery:
            return
        dead_after = self.config.dead_after
        self._next_recovery = now + max(dead_after / 4, self.config.heartbeat_interval)
        if time.time() - self.backend.outage_ended_at < dead_after:
            return  # after an outage, silence proves nothing until everyone could heartbeat
        for runner in self.backend.stale_runners(dead_after):
            if runner.supervisor == self.id:
                continue
            silent = time.time() - runner.heartbeat_at
            error = ErrorInfo("RunnerLost", f"{runner.kind} {runner.id} on {runner.host} "
                              f"(pid {runner.pid}) stopped heartbeating {silent:.0f} s ago")
            recovered = self.backend.recover(runner.id, dead_after, error)
            if recovered is not None:
                logger.warning("%s; took back %d invocation(s): %s", error.message,
                               len(recovered), ", ".join(i.id for i in recovered) or "-")

    def _purge_finished(self) -> None:
        """Delete invocations that finished over ``keep_finished`` ago (0: keep them all),
        a slice at a time: what is left waits for the next heartbeat."""
        keep = self.config.keep_finished
        now = time.monotonic()
        if not keep or now < self._next_purge:
            return
        purged, all_gone = purge_finished(self.backend, time.time() - keep,
                                          until=now + PURGE_SLICE)
        self._next_purge = now + (min(PURGE_EVERY, keep / 2) if all_gone else 0.0)
        if purged:
            logger.info("deleted %d invocation(s) that finished over %g s ago (keep_finished)",
                        purged, keep)

    def _burst_done(self) -> bool:
        if self._progress is None or time.monotonic() < self._next_burst_check:
            return False
        self._next_burst_check = time.monotonic() + BURST_TICK
        if self._progress.update() > 0:
            return False
        self._stop_requested = True
        return True

    def _respawn(self) -> None:
        used = {c.info.slot for c in self.workers.values()}
        for slot in range(1, self.processes + 1):
            if slot not in used and self.crash_loop.may_spawn():
                self._spawn(slot)

    def _reap(self) -> None:
        """Handle every worker that has exited: reroute, forget, tell the plugins."""
        for runner_id, child in list(self.workers.items()):
            if child.process.exitcode is None:
                continue
            del self.workers[runner_id]
            child.process.join()
            child.connection.close()
            exitcode = child.process.exitcode
            signame, description = describe_exit(exitcode)
            if child.kill_error is not None:  # no "perhaps out of memory?": we killed it
                description = f"was killed by the supervisor: {child.kill_error.message}"
                error: ErrorInfo | None = child.kill_error
            elif child.requested_stop:
                error = None
            else:
                error = ErrorInfo("WorkerDied", f"{child.who} {description} while running "
                                  "this invocation")
            held = self.backend.reroute(runner_id, error, retry=self._may_retry(child, error))
            self.backend.forget_runners([runner_id])
            exit = WorkerExit(exitcode=exitcode, signal=signame, description=description,
                              invocations=tuple(held), requested=child.requested_stop,
                              peak_memory=child.peak_memory)
            self.app.plugins.hook.pprunner_worker_exited(runner=child.info, exit=exit)
            self._log_exit(child, exit)
            if self._stop_requested:
                continue
            if exitcode == ExitCode.APP_LOAD_ERROR:
                logger.error("%s could not load the app %s (its error is above); stopping "
                             "instead of respawning", child.who, self.app_path)
                self.exit_code = ExitCode.APP_LOAD_ERROR
                self._stop_requested = True
            elif not child.booted:
                self.crash_loop.died_at_boot(
                    child.boot_error or (child.kill_error and child.kill_error.message)
                    or f"{child.who} {description}")

    def _may_retry(self, child: Child, error: ErrorInfo | None) -> bool:
        """A worker killed at its invocation's hard limit retries only if the task says so."""
        if error is None or child.killed_for_task is None:
            return True
        task = self.app.tasks.get(child.killed_for_task)
        return task is not None and any(issubclass(TimeLimitExceeded, kind)
                                        for kind in task.retry_on)

    def _log_exit(self, child: Child, exit: WorkerExit) -> None:
        """One line per death: how, what it held and what became of it, its peak memory."""
        held = ", ".join(f"{i.id} ({i.task}) -> {i.status}" for i in exit.invocations)
        message = f"{child.who} {exit.description}"
        if child.retiring:
            message += f" after retiring ({child.retire_reason})"
        if held:
            message += f"; it held {held}"
        if exit.peak_memory:
            message += f"; peak memory {exit.peak_memory / 2**20:.0f} MiB"
        if exit.requested or (self._stop_requested and exit.exitcode == 0):
            logger.info("%s", message)
        else:
            logger.warning("%s", message)

    # -- signals -------------------------------------------------------------------

    def _queue_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)
        self._wake()

    def _inline_signal(self, signum: int, frame: Any) -> None:
        """Inline mode has no loop to queue for: the first signal stops after the
        current task, a second interrupts it (it is handed back)."""
        if self._stop_requested and self._inline is not None:
            self._immediate = True
            self.exit_code = ExitCode.INTERRUPTED
            self._inline.terminate(signum, frame)
        self.request_stop()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe is already awake; closed: stopped
            os.write(self._wakeup_write, b"\0")

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except (BlockingIOError, OSError):
            pass
        for command in self._control.receive() if self._control else ():
            self._obey(command)
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                self.reload()
            elif signum in (signal.SIGTTIN, signal.SIGTTOU):
                self.scale_to(max(1, self.processes + (1 if signum == signal.SIGTTIN else -1)))
            elif self._stop_requested and signum == signal.SIGINT:
                logger.warning("second SIGINT: stopping at once")
                self._immediate = True
            else:
                logger.info("%s: stopping gracefully (shutdown_timeout %.0f s)", name,
                            self.config.shutdown_timeout)
                self.request_stop()

    def _obey(self, command: str) -> None:
        """A command from ``pprunner scale`` (see :mod:`pprunner.control`)."""
        verb, _, argument = command.partition(" ")
        try:
            if verb == "scale":
                self.scale_to(int(argument))
                return
        except (ValueError, ConfigError) as exc:
            logger.warning("ignored control command %r: %s", command, exc)
            return
        logger.warning("ignored unknown control command %r", command)

    # -- stopping ------------------------------------------------------------------

    def _shutdown(self, immediate: bool = False) -> None:
        """Stop every worker: let them finish, then SIGTERM, then SIGKILL."""
        if not self.workers:
            return
        if self.stop_event is not None:
            self.stop_event.set()
        self.backend.wakeup()
        deadline = time.monotonic() + self.config.shutdown_timeout
        if not (immediate or self._immediate):
            self._wait_for_exits(deadline)
        if self.workers and not self._immediate:
            logger.warning("%d worker(s) still busy after %.1f s; sending SIGTERM",
                           len(self.workers), self.config.shutdown_timeout)
            for child in self.workers.values():
                child.requested_stop = True
                child.process.terminate()
            self._wait_for_exits(time.monotonic() + TERMINATE_GRACE)
        for child in self.workers.values():
            child.requested_stop = True
            child.process.kill()
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
            child.requested_stop = True
            child.process.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                child.process.kill()
                child.process.join()
        self.workers.clear()

    def _wait_for_exits(self, deadline: float | None) -> None:
        while self.workers:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            waitables = [c.process.sentinel for c in self.workers.values()]
            wait_for_ready([*waitables, self._wakeup_read], left)
            self._drain_wakeups()
            self._reap()
            if self._immediate and deadline is not None:
                return

    def _close(self) -> None:
        if self.config.health_file:
            with contextlib.suppress(OSError):  # a stopped supervisor is not alive
                os.unlink(self.config.health_file)
        if not self._backend_lost:
            owned = self.backend.owned_by([self.id, *self.workers])
            if owned:
                logger.error("invocations still owned after stopping: %s", owned)
            self.backend.forget_runners([self.id])
        self.backend.keep_waiting = self._producer_patience  # the app's producers' again
        if self._progress is not None:
            self._progress.close()
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
        if self._lifeline is not None:
            for end in self._lifeline:
                end.close()
            self._lifeline = None
        if self._control is not None:
            self._control.close()
            self._control = None
        for fd in (self._wakeup_read, self._wakeup_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- inline --------------------------------------------------------------------

    def _run_inline(self) -> None:
        """Claim and run in this process (``--processes 0``): for debugging."""
        last = 0.0

        def heartbeat_now_and_then() -> None:
            nonlocal last
            if time.monotonic() - last >= self.config.heartbeat_interval:
                self._heartbeat()
                last = time.monotonic()

        context = WorkerContext(app=self.app, runner_id=self.id, slot=0, runner_cache={},
                                stop_event=threading.Event())
        self._inline = Worker(context, between=heartbeat_now_and_then)
        if self._stop_requested:
            return
        self._inline.run(burst=self.burst)
