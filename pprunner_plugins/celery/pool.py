"""``TaskPool``: pprunner's supervisor as a Celery worker pool, in place of prefork.

Celery's consumer feeds it exactly as it feeds prefork (``apply_async`` with
Celery's trace function and callbacks); each task message becomes a pushed
:class:`~pprunner.jobs.Call` that an idle child runs with Celery's own trace
function, and what the supervisor reports becomes Celery's callbacks
(:mod:`.jobs`). Names follow prefork's (``num_processes``, ``terminate_job``,
``grow``/``shrink``, ``restart``, ``info``) where the meaning is the same.

On Celery's event loop the supervisor is *hosted* (no thread of its own):
the hub watches its descriptor and turns it, so a task goes to an idle child
inside ``apply_async`` and its result comes back in the hub's thread, as
prefork's do; a blocking consumer (a transport without an event loop) gets
the supervisor's thread and a delivery thread instead.

Where it differs from prefork, and why:

- children are spawned by default (``pprunner_start_method``), so CUDA, gRPC
  and threaded libraries work in tasks; they import the app by its module;
- a task waits in the parent until a child is idle (no per-child queue), so no
  ``-O fair`` is needed and a long task never holds up tasks queued behind it;
- ``--max-memory-per-child`` is the child's peak after each task, as with
  prefork, and a replacement is started before the old child retires;
- ``task_join_will_block`` is False: ``result.get()`` inside a task is allowed,
  and while it waits the child lends its slot: the supervisor runs one more
  child and the consumer may hand the pool one more task, up to
  ``pprunner_max_lent_slots`` (:meth:`_lend`); a wait that would leave no
  child for what it waits for fails its task (:meth:`_refuse_wait`).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import select
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from billiard.exceptions import SoftTimeLimitExceeded
from billiard.pool import LaxBoundedSemaphore
from celery import signals
from celery.concurrency.base import BasePool
from celery.worker import state as worker_state

import pprunner
from pprunner.dispatch import Dispatcher
from pprunner.jobs import Call, Event, Started, Waiting
from pprunner.supervisor import Supervisor, SupervisorView

from . import child, settings
from .jobs import Job

logger = logging.getLogger("pprunner.celery")

#: Celery's exit status for a worker whose pool cannot run anything
EX_FAILURE = 1


class _Watch:
    """The supervisor-side hook the pool needs: a supervisor that stops by itself
    (no child can boot: an app that fails to import, a crash loop) stops the
    Celery worker, instead of a consumer that feeds a pool that runs nothing."""

    def __init__(self, pool: TaskPool) -> None:
        self.pool = pool

    @pprunner.hookimpl
    def pprunner_supervisor_stopping(self, supervisor: SupervisorView) -> None:
        if self.pool._stopping:
            return
        sup = self.pool._supervisor
        why = sup.failure if sup is not None and sup.failure else "it stopped by itself"
        logger.critical("the pprunner pool cannot run tasks: %s; stopping the worker", why)
        worker_state.should_stop = EX_FAILURE


def _ignore_ctrl_c_while_exiting() -> None:
    """The worker has stopped and the interpreter exits: Python puts SIGINT back to
    its default action now, so a second Ctrl-C that comes this late (this pool
    stops idle children in milliseconds) would kill the process by SIGINT
    instead of letting it exit with Celery's status. Ignored instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Celery's signals sent in the worker's main process only, before the pool starts
MAIN_PROCESS_SIGNALS = ("celeryd_init", "worker_init")


def _warn_about_main_process_setup(start_method: str) -> None:
    """One warning at start when the app connects receivers (other than Celery's own)
    to signals that run in the main process only: prefork's forked children inherit
    what they set; spawned children do not, so tasks would not see it."""
    found = [f"{name} ({_receiver_name(receiver)})" for name in MAIN_PROCESS_SIGNALS
             for _, receiver in getattr(signals, name).receivers
             if not _receiver_name(receiver).startswith(("celery.", "kombu.", "<dead"))]
    if found:
        logger.warning("receivers of %s run in the worker's main process only; with %s "
                       "children (pprunner_start_method) tasks do not see what they set: "
                       "do per-process setup in worker_process_init", ", ".join(found),
                       start_method)


def _receiver_name(receiver: Any) -> str:
    function = receiver() if isinstance(receiver, weakref.ReferenceType) else receiver
    if function is None:
        return "<dead receiver>"
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"


class TaskPool(BasePool):
    """pprunner's supervisor as a Celery pool (module docstring)."""

    #: the consumer holds a task until a child is free (prefork's flow control), so a
    #: task revoked while it waits is never started
    uses_semaphore = True
    #: joins do not block the pool: a waiting child lends its slot (module docstring)
    task_join_will_block = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        initargs = self.options.get("initargs") or (self.app, None)
        self.app: Any = self.app or initargs[0]
        self.hostname: str = initargs[1] or "celery"
        # read here: a bad setting stops the worker before it consumes anything
        self.config = settings.resolve({"limit": self.limit, **self.options},
                                       self.app.conf if self.app is not None else None)
        self._target = self.config.processes
        self._jobs = itertools.count(1)
        self._running: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._dispatcher: Dispatcher | None = None
        self._supervisor: Supervisor | None = None
        self._slots: Any = None
        self._blocking = bool(self.options.get("threads", True))
        self._hub: Any = None
        #: the hub's timer for the hosted supervisor's next pass, and when it is due
        self._timer: Any = None
        self._timer_due = 0.0
        self._stopping = False
        #: a stop runs (a second one, from a signal handler, only makes it immediate)
        self._stop_under_way = False
        #: a pass of the hosted supervisor runs, and the descriptor the hub watches
        self._in_turn = False
        self._watched_fd: int | None = None
        #: tasks that wait in a child now, and slots lent to the consumer for them
        self._waiting = 0
        self._lent = 0
        #: slots taken back while every one was in use: the next releases are kept
        self._owed = 0
        #: Celery's consumer feeding this pool (its prefetch window follows lent slots)
        self._consumer: Any = None
        signals.worker_ready.connect(self._consumer_ready, weak=False)

    # -- starting ------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the supervisor: its children boot with Celery's initializer."""
        self._slots = (LaxBoundedSemaphore(self._target) if self._blocking
                       else self.options.get("semaphore"))
        # On Celery's event loop the supervisor is hosted: a task goes to a child in
        # apply_async and its result comes back in the hub's thread, as with prefork;
        # a blocking consumer has no loop, so a dispatcher thread delivers.
        # calls_from_main=False: children run Celery's trace function and get the app by
        # its import path (or are forked), never a function of the worker's __main__
        self._dispatcher = Dispatcher(deliver="thread" if self._blocking else "supervisor",
                                      report_waits=True, calls_from_main=False)
        app, start_method = self._app_for_children()
        if start_method != "fork":
            _warn_about_main_process_setup(start_method)
        # --max-memory-per-child is checked in the child against its peak, as prefork does
        config = attrs.evolve(self.config, start_method=start_method, max_memory_per_child=0)
        initializer = Call(child.boot, (app, self.hostname, start_method != "fork",
                                        self.options.get("max_memory_per_child") or 0),
                           name="celery.concurrency.prefork.process_initializer")
        self._supervisor = Supervisor(dispatcher=self._dispatcher, config=config,
                                      initializer=initializer,
                                      prepare=(Call(child.prepare, (app,))
                                               if isinstance(app, child.AppRef) else None),
                                      plugins=[child, _Watch(self)]
                                      ).start(hosted=not self._blocking)
        if self._blocking:  # a blocking consumer has no register_with_event_loop
            self._wait_for_children()
        atexit.unregister(_ignore_ctrl_c_while_exiting)  # once per process
        atexit.register(_ignore_ctrl_c_while_exiting)

    def _app_for_children(self) -> tuple[Any, str]:
        """What children get the app by, and the start method that allows it."""
        method = self.config.start_method
        if method == "fork" or self.app is None:
            return self.app, method
        found = child.AppRef.find(self.app)
        if found is not None:
            logger.debug("children import the Celery app as %s", found)
            return found, method
        logger.warning("the Celery app %r has no import path (it was built at run time, or in "
                       "__main__), so pprunner's children start with fork instead of %s to "
                       "inherit it", self.app.main, method)
        return self.app, "fork"

    def did_start_ok(self) -> bool:
        return self._supervisor is not None and self._supervisor.failure is None

    def _wait_for_children(self) -> None:
        """Wait until every child has booted (prefork's forked children are ready at
        once; spawned ones import Celery and the app first), so that Celery's
        "ready.", logged next, means a task runs at once; or until the supervisor
        stopped because they could not boot (it logged why). The consumer connected
        meanwhile: the children boot while it does."""
        supervisor = self._supervisor
        if supervisor is None:
            return
        if self._blocking:  # the supervisor has its own thread
            supervisor.wait_until_ready()
            return
        delay: float | None = 0.0  # hosted, and the hub does not run yet: turn it here
        while delay is not None and not supervisor.wait_until_ready(0):
            select.select([supervisor.fileno()], [], [], delay)
            delay = supervisor.turn()

    def register_with_event_loop(self, hub: Any) -> None:
        """Celery's event loop drives the supervisor: its callbacks run there."""
        self._hub = hub
        self._wait_for_children()
        if self._supervisor is not None and self._supervisor.running and not self._blocking:
            self._watched_fd = self._supervisor.fileno()
            hub.add_reader(self._watched_fd, self._turn)
            self._turn()

    def _turn(self) -> None:
        """One pass of the hosted supervisor; the hub calls it again when the
        supervisor's descriptor is readable, and a timer when the delay it asked
        for has passed (heartbeats, time limits, respawns)."""
        supervisor = self._supervisor
        if supervisor is None or self._stopping:
            return
        self._in_turn = True
        try:
            delay = supervisor.turn()
        finally:
            self._in_turn = False
        if delay is None:  # it stopped by itself (_Watch has told the worker to stop)
            self._unwatch()
            return
        due = time.monotonic() + delay
        if self._timer is None or due < self._timer_due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_due = self._hub.call_later(delay, self._on_timer), due

    def _unwatch(self) -> None:
        """The hub stops watching the supervisor (whose descriptor may be closed)."""
        if self._watched_fd is not None:
            self._hub.remove_reader(self._watched_fd)
            self._watched_fd = None

    def _on_timer(self) -> None:
        self._timer = None
        self._turn()

    # -- running tasks -----------------------------------------------------------------

    def on_apply(self, target: Callable[..., Any], args: Sequence[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, callback: Any = None,
                 accept_callback: Any = None, timeout_callback: Any = None,
                 error_callback: Any = None, soft_timeout: float | None = None,
                 timeout: float | None = None, waitforslot: bool | None = None,
                 **_: Any) -> Job:
        """Queue one task message for the next idle child (Celery's ``apply_async``)."""
        assert self._dispatcher is not None, "the pool was not started"
        if self._blocking and waitforslot and self._slots is not None:
            self._slots.acquire()  # a blocking consumer waits for a free child here
        args = tuple(args or ())
        name = args[0] if args and isinstance(args[0], str) else getattr(target, "__name__", "?")
        task = self.app.tasks.get(name) if self.app is not None else None
        call = Call(child.run_traced, (target, getattr(task, "__module__", None), args,
                                       kwargs or {}),
                    time_limit=timeout or self.options.get("timeout"),
                    soft_time_limit=soft_timeout or self.options.get("soft_timeout"),
                    name=name, soft_limit_error=SoftTimeLimitExceeded)
        job = Job(next(self._jobs), call, callback, accept_callback, error_callback,
                  timeout_callback, withdraw=self._dispatcher.cancel, on_end=self._ended)
        with self._lock:
            self._running[call.id] = job
        self._dispatcher.submit(call, self._notify)
        return job

    def _notify(self, event: Event) -> None:
        job = self._running.get(event.call.id)
        if job is None:
            return
        if isinstance(event, Waiting):
            if job.waiting != event.waiting:
                job.waiting = event.waiting
                self._lend(1 if event.waiting else -1)
                if event.waiting and self._waiting >= self._target + self._max_lent:
                    self._refuse_wait(job)  # every child waits, and none more may be lent
            return
        if isinstance(event, Started) and event.call.soft_time_limit:
            job.cancel_soft_warning = self._later(event.call.soft_time_limit,
                                                  job.soft_limit_reached)
        job.notify(event)

    def _ended(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.call.id, None)
        if job.waiting:  # its child died while it waited
            job.waiting = False
            self._lend(-1)
        if self._owed:
            self._owed -= 1
        elif self._slots is not None:
            self._slots.release()

    def _lend(self, change: int) -> None:
        """A task started (+1) or stopped (-1) waiting in its child. The consumer's
        count of free slots follows the supervisor's: one more slot per waiting
        task, up to ``max_lent_slots`` (default ``-c``), so the consumer hands the
        pool the tasks the waiting ones wait for; its prefetch window grows with
        it, as with ``pool_grow``, so an acks-late parent, unacknowledged while it
        waits, does not keep its subtask in the broker. Where callbacks run (the hub)."""
        self._waiting += change
        lent = min(self._waiting, self._max_lent)
        if self._slots is None or lent == self._lent:
            return
        self._widen_prefetch(lent - self._lent)
        while self._lent < lent:
            self._lent += 1
            self._add_slot()
        while self._lent > lent:
            self._lent -= 1
            self._remove_slot()

    @property
    def _max_lent(self) -> int:
        """``pprunner_max_lent_slots``, whose default is ``-c``."""
        bound = self.config.max_lent_slots
        return self._target if bound is None else bound

    def _refuse_wait(self, job: Job) -> None:
        """Every child waits in ``result.get()`` and no more slots may be lent, so no
        child is left to run what they wait for: the newest wait raises
        :class:`~.child.LendingLimitReached` in its task (which fails with it, and
        frees its child for the others' subtasks) instead of a silent deadlock."""
        logger.error("task %s waits in result.get() while every child of this worker waits "
                     "and pprunner_max_lent_slots (%s) slots are lent: its wait is refused; "
                     "raise pprunner_max_lent_slots or -c, or wait with a timeout",
                     job.call.name, self._max_lent)
        assert self._supervisor is not None and job.pid is not None
        self._supervisor.signal_worker(job.pid, child.REFUSE_WAIT,
                                       "its wait could never end (pprunner_max_lent_slots)")

    def _consumer_ready(self, sender: Any = None, **_: Any) -> None:
        """Celery's ``worker_ready``: the consumer that feeds this pool."""
        if getattr(sender, "pool", None) is self:
            self._consumer = sender
            signals.worker_ready.disconnect(self._consumer_ready)

    def _widen_prefetch(self, slots: int) -> None:
        """Grow (or shrink back) the consumer's prefetch window by ``slots`` children's
        worth; it applies the change on its next loop, as after ``pool_grow``."""
        consumer = self._consumer
        if consumer is None or not consumer.initial_prefetch_count:  # unlimited prefetch
            return
        count = abs(slots) * consumer.prefetch_multiplier
        if slots > 0:
            consumer.qos.increment_eventually(count)
        else:
            consumer.qos.decrement_eventually(count)

    def _add_slot(self) -> None:
        """One more free slot in the consumer's count (``lend``, ``grow``)."""
        slots = self._slots
        if isinstance(slots, LaxBoundedSemaphore):  # billiard's, a blocking consumer
            slots.grow()
        else:  # kombu's (the hub): its grow(n) adds n and then releases n more
            slots.initial_value += 1
            slots.release()

    def _remove_slot(self) -> None:
        """One slot fewer; when every slot is in use, the next task to end gives it back."""
        slots = self._slots
        if isinstance(slots, LaxBoundedSemaphore):
            slots._initial_value -= 1
            taken = slots.acquire(blocking=False)
        else:
            slots.initial_value -= 1
            taken, slots.value = slots.value > 0, max(slots.value - 1, 0)
        if not taken:
            self._owed += 1

    def _later(self, delay: float, function: Callable[[], None]) -> Callable[[], None]:
        """Run ``function`` after ``delay`` where callbacks run (the hub, else a timer
        thread); returns what cancels it."""
        if self._hub is not None and not self._blocking:
            entry = self._hub.call_later(delay, function)
            return entry.cancel
        timer = threading.Timer(delay, function)
        timer.daemon = True
        timer.start()
        return timer.cancel

    def terminate_job(self, pid: int, sig: int | None = None) -> None:
        """End the task the child ``pid`` runs (``revoke(terminate=True)``): the child
        gets ``sig`` (SIGTERM by default) and is replaced; the task ends as
        ``Terminated``, as with prefork."""
        signum = int(sig or signal.SIGTERM)
        with self._lock:
            for job in self._running.values():
                if job.pid == pid:
                    job.terminated_by = signum
        assert self._supervisor is not None
        self._supervisor.signal_worker(pid, signum, "Celery terminates the task it runs "
                                       "(revoke with terminate=True)")

    # -- resizing and restarting ---------------------------------------------------------

    def grow(self, n: int = 1) -> None:
        self._resize(self._target + n)
        for _ in range(n if self._slots is not None else 0):
            self._add_slot()

    def shrink(self, n: int = 1) -> None:
        if self._target - n < 1:
            raise ValueError(f"Can't shrink pool below 1 process (it has {self._target})")
        self._resize(self._target - n)
        for _ in range(n if self._slots is not None else 0):
            self._remove_slot()

    def _resize(self, processes: int) -> None:
        assert self._supervisor is not None
        self._target = processes
        self._supervisor.scale_to(processes)

    def restart(self) -> None:
        """``pool_restart``: every child is replaced, one at a time, by one that
        imports the code afresh; each finishes its task first."""
        assert self._supervisor is not None
        self._supervisor.reload()

    @property
    def num_processes(self) -> int:
        return self._target

    # -- stopping ------------------------------------------------------------------

    def on_stop(self) -> None:
        """Warm shutdown: running tasks finish (up to ``pprunner_shutdown_timeout``);
        their results and acks go out as they end."""
        self._stop(immediate=False)

    def on_terminate(self) -> None:
        """Cold shutdown: children are killed at once; their tasks are not acked
        (with ``acks_late``) and come back."""
        self._stop(immediate=True)

    def on_close(self) -> None:
        self._stopping = True

    def _stop(self, immediate: bool) -> None:
        """Stop the supervisor and its children. Celery's second Ctrl-C (its cold
        shutdown) calls ``pool.stop()`` from a signal handler, which may interrupt
        a pass of the supervisor or the stop under way: then the stop is only made
        immediate, and the stop under way (or Celery's ``terminate``) does it."""
        supervisor, dispatcher = self._supervisor, self._dispatcher
        if supervisor is None or dispatcher is None:
            return
        immediate = immediate or bool(worker_state.should_terminate)
        if self._stop_under_way or self._in_turn:
            supervisor.stop(immediate=immediate)  # inside a pass, this only marks it
            return
        self._stopping = self._stop_under_way = True
        hosted = not self._blocking and self._hub is not None
        if hosted:
            if self._timer is not None:
                self._timer.cancel()
            self._unwatch()
        # the hub does not turn while the worker stops: keep its timers (broker
        # heartbeats) firing while children finish, as prefork does while it joins;
        # hosted, the last results are delivered here
        supervisor.stop(immediate=immediate,
                        while_stopping=self._while_stopping if hosted else None)
        dispatcher.shutdown()
        self._supervisor = None

    def _while_stopping(self) -> None:
        """Between the stop's waits for busy children: the hub's timers fire, and a
        cold shutdown asked meanwhile (a second Ctrl-C, which older Celery (5.3) only
        records in ``should_terminate``) makes the stop immediate."""
        if worker_state.should_terminate and self._supervisor is not None:
            self._supervisor.stop(immediate=True)  # inside the stop's pass: marks it
        self._hub.fire_timers()

    # -- inspect stats -------------------------------------------------------------

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        supervisor = self._supervisor
        runners = supervisor.live_runners()[1:] if supervisor is not None else []
        info.update({
            "max-concurrency": self.limit,
            "processes": [r.pid for r in runners],
            "max-tasks-per-child": self.config.max_tasks_per_child or "N/A",
            "max-memory-per-child": self.config.max_memory_per_child * 1024 or "N/A",
            "put-guarded-by-semaphore": self.putlocks,
            "timeouts": (self.options.get("soft_timeout") or 0,
                         self.options.get("timeout") or 0),
            "writes": "N/A",
            "pprunner": {
                "supervisor": supervisor.id if supervisor is not None else None,
                "start-method": supervisor.config.start_method if supervisor else None,
                "queued": self._dispatcher.queued if self._dispatcher else 0,
                # on Celery's event loop, or a dispatcher thread for a blocking consumer
                "delivery": "thread" if self._blocking else "hosted",
                "pprunner-version": pprunner.__version__,
            },
        })
        return info


