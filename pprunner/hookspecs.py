"""Every pprunner hook specification. Each docstring is that hook's reference.

Hooks are called with keyword arguments only; an implementation may accept
any subset of them, so arguments can be added later but are never renamed or
removed. Implement them in a module or class decorated with
``pprunner.hookimpl`` and declare it under ``[project.entry-points.pprunner]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from .backend import Backend
    from .config import Config
    from .consuming import HostJob
    from .invocation import Invocation, RunnerInfo
    from .jobs import Call, Ending, Runnable
    from .plugins import Command, Plugins
    from .serializer import Serializer
    from .spawn import WorkerExit, WorkerProcess, WorkerSpec
    from .supervisor import SupervisorView
    from .task import Task
    from .worker import WorkerContext

hookspec = pluggy.HookspecMarker("pprunner")
#: decorate hook implementations with this (also exported as ``pprunner.hookimpl``)
hookimpl = pluggy.HookimplMarker("pprunner")


# ---------------------------------------------------------------------------
# discovery: what plugins provide
# ---------------------------------------------------------------------------


@hookspec
def pprunner_register_backends(register: Callable[[str, Callable[[str], Backend]], None]) -> None:
    """Discovery: register backend factories by URL scheme.

    :param register: call ``register(scheme, factory)``; ``factory(url)``
        returns a ``pprunner.backend.Backend``. A scheme registered by
        two plugins is an error naming both.

    ```python
    @pprunner.hookimpl
    def pprunner_register_backends(register):
        register("mystore", MyStoreBackend)
    ```
    """


@hookspec
def pprunner_register_serializers(register: Callable[[Serializer], None]) -> None:
    """Discovery: register serializers.

    :param register: call ``register(serializer)`` with a
        ``pprunner.serializer.Serializer`` instance; its ``name`` is how
        apps select it and is stored with every invocation it encodes. Set
        ``safe = False`` on one whose loading can run code.
    """


@hookspec
def pprunner_register_commands(register: Callable[[Command], None]) -> None:
    """Add sub-commands to ``pprunner``: a host plugin's start command that takes the
    host's own arguments (``pprunner dramatiq myapp.tasks --processes 2``).

    :param register: call ``register(Command(name, run, help="...", arguments=add))``
        with a ``pprunner.plugins.Command``; ``add(parser)`` adds the command's
        options to its ``argparse.ArgumentParser`` (``nargs=argparse.REMAINDER``
        hands the rest to the host's own parser), and ``run(args, parser)`` carries
        it out and returns its exit code. A name that another command has already
        is a ``pprunner.errors.PluginError`` that names it.

    ```python
    from pprunner.plugins import Command


    @pprunner.hookimpl
    def pprunner_register_commands(register):
        register(Command("hello", lambda args, parser: print("hi", args.who) or 0,
                         help="say hello", arguments=lambda p: p.add_argument("who")))
    ```
    """


@hookspec
def pprunner_add_cli_options(command: str, parser: argparse.ArgumentParser) -> None:
    """Add options to a ``pprunner`` sub-command.

    :param command: the sub-command's name (``run``, ``enqueue``, ``status``,
        ``plugins``, ...).
    :param parser: its ``argparse.ArgumentParser``. The parsed ``run`` options
        reach plugins as ``options`` in [pprunner_supervisor_started][].
    """


# ---------------------------------------------------------------------------
# configure: a process's settings are known (producer, supervisor, worker)
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def pprunner_configure(config: Config, plugins: Plugins) -> None:
    """This process's settings are known: in a producer's or the supervisor's App
    when its plugins are first used (again after ``App.configure`` changed them), in
    a push-mode supervisor, and in each worker before [pprunner_worker_init][].

    A plugin that is off unless a setting turns it on registers its per-job
    implementations here, with ``plugins.manager.register(...)`` (and unregisters
    them when told settings that turn it off), so that it costs nothing while off.
    Historic, as ``pytest_configure`` is: a plugin registered later hears every
    call so far at once, the settings in force last. An exception (a
    ``pprunner.errors.ConfigError``) stops whatever needed the plugins.

    :param config: the effective ``pprunner.config.Config``.
    :param plugins: the ``pprunner.plugins.Plugins`` being configured.

    ```python
    @pprunner.hookimpl
    def pprunner_configure(config, plugins):
        if config.tracing and plugins.manager.get_plugin("my.tracing") is None:
            plugins.manager.register(MyTracing(), name="my.tracing")
    ```
    """


# ---------------------------------------------------------------------------
# enqueue: a producer sends a new job (pull: to the backend; push: to a worker)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def pprunner_enqueue(job: Invocation | Call, headers: dict[str, str],
                     send: Callable[[Invocation | Call], None]) -> Invocation | Call | None:
    """Send a new job on its way, in the producer: ``Task.enqueue`` stores a new
    ``pprunner.invocation.Invocation`` in the app's backend, and
    ``Dispatcher.submit`` queues a pushed ``pprunner.jobs.Call`` for a worker.

    Stops at first non-None result: the job as sent. The default sends ``job``
    through ``send`` carrying ``headers``; while no plugin implements this hook it
    is not called at all (``pprunner.plugins.Plugins.send_new``). Use
    ``wrapper=True`` implementations to put context around the sending (a producer
    span) and to add entries to ``headers`` before they yield: the job is sent with
    them, and the worker reads them as ``job.headers`` (kept through retries and
    reroutes). Headers are string keys and values, at most
    ``pprunner.invocation.MAX_HEADERS_SIZE`` bytes in all; more is a
    ``ValueError``. An exception here means nothing was sent.

    ```python
    @pprunner.hookimpl(wrapper=True)
    def pprunner_enqueue(job, headers):
        headers["tenant"] = current_tenant()
        return (yield)
    ```

    An observer counts what was sent after the yield (the metrics plugin's
    "enqueued" count): an invocation stored by ``enqueue()`` in the process that
    enqueued it (a producer, or a worker whose task enqueues others), or a call
    submitted to a push-mode supervisor, on the submitting thread. It runs inside
    every ``enqueue()``: keep it quick.

    :param job: the new job, with the headers its creator gave it (usually none).
    :param headers: a mutable copy of ``job.headers``.
    :param send: stores or queues the job; raises if it could not.
    """


# ---------------------------------------------------------------------------
# spawn: starting and losing worker processes (in the supervisor)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def pprunner_spawn_worker(spec: WorkerSpec, start_method: str) -> WorkerProcess | None:
    """Start one worker process for ``spec.runner_id`` and return it started.

    Stops at first non-None result; return None to let the default spawn. The
    runner id is generated by the supervisor before this call. The returned
    object needs ``pid``, ``sentinel`` (a waitable handle that becomes ready
    when the process ends), ``exitcode``, ``is_alive()``, ``terminate()``,
    ``kill()`` and ``join(timeout)``, as ``multiprocessing.Process`` has. The
    child must run ``pprunner.worker.main(spec)``. The default uses
    ``multiprocessing`` with ``start_method`` (``spawn``, ``forkserver`` or
    ``fork``), except a pull-mode worker with ``spawn`` on Linux, which
    ``pprunner.launch`` starts without multiprocessing's resource tracker.
    """


@hookspec
def pprunner_supervisor_booting(supervisor: SupervisorView) -> None:
    """The supervisor is about to start its first worker (nothing runs yet).

    Once per supervisor, in the thread that starts it. A plugin that watches
    workers and jobs from the very first (metrics) sets up here, and may
    register more implementations with ``supervisor.plugins.manager``: they take part
    in everything that follows, the push-mode job hooks included. An
    exception stops the supervisor before any worker starts (a
    ``pprunner.errors.ConfigError`` is one line and exit 3 for
    ``pprunner run``).
    """


@hookspec
def pprunner_supervisor_started(supervisor: SupervisorView,
                                options: argparse.Namespace | None) -> None:
    """The supervisor has started its workers.

    :param supervisor: a ``pprunner.supervisor.SupervisorView``: ``id``, ``pid``,
        ``processes``, ``config``, ``app`` and ``backend`` (None in push mode),
        ``plugins``, ``runners()``, ``workers()`` (each live worker's
        ``RunnerInfo``, phase, push-mode call and whether it lends its slot),
        ``queued_calls`` (push mode), and ``scale_to(n)``, ``reload()`` and
        ``request_stop()``, which are safe to call from any thread.
    :param options: the parsed ``pprunner run`` options, or None when the
        supervisor was created in code.
    """


@hookspec
def pprunner_supervisor_stopping(supervisor: SupervisorView) -> None:
    """The supervisor begins to stop (its workers are still running).

    Called once, in the supervisor's loop thread, before workers are asked to
    finish; a host stops feeding it here.
    """


@hookspec
def pprunner_supervisor_stopped(supervisor: SupervisorView) -> None:
    """The supervisor has stopped: its workers are gone and its own resources
    closed. Once, after [pprunner_supervisor_booting][], however it ended
    (a stop, a crash loop, an error); undo what was set up there.
    """


@hookspec
def pprunner_worker_started(runner: RunnerInfo) -> None:
    """A worker process was spawned (it may still be importing the app).

    :param runner: its ``pprunner.invocation.RunnerInfo`` (id, pid, slot).
    """


@hookspec
def pprunner_worker_ready(runner: RunnerInfo) -> None:
    """A worker finished booting (app, initializer, [pprunner_worker_init][]) and
    takes jobs now.

    In the supervisor's loop thread. A push-mode host that hands calls to one
    worker in particular (``Call(..., runner_id=...)``, as the pynenc runner does:
    it claims work in that worker's name) learns here which ones it may use.
    """


@hookspec
def pprunner_worker_exited(runner: RunnerInfo, exit: WorkerExit) -> None:
    """A worker process ended; called after what it owned was handed back.

    :param runner: the runner as last recorded.
    :param exit: a ``pprunner.spawn.WorkerExit``: ``exitcode``, ``signal``
        (e.g. ``SIGKILL``), a readable ``description``, ``invocations`` (pull
        mode, as they are after the reroute), ``calls`` (push mode),
        ``requested`` (the supervisor asked it to stop) and ``cause``, one word:
        ``recycled`` (``max_tasks_per_child``, ``max_memory_per_child``,
        ``replace_after_job``), ``retired`` (reload, scale-down, a lent slot given
        back), ``stopped`` (the supervisor stopping), ``time_limit``,
        ``boot_timeout``, ``killed`` (at a host's request: ``dispatcher.kill``,
        ``signal_worker``), ``signal`` (a signal nobody here sent: the OOM killer,
        ``kill -9``, a segfault) or ``exit_code`` (it exited by itself: a failed
        boot, ``os._exit``).
    """


@hookspec
def pprunner_job_started(call: Call, runner: RunnerInfo) -> None:
    """Push mode: ``call`` was handed to the idle worker ``runner`` (in the supervisor)."""


@hookspec
def pprunner_job_finished(call: Call, runner: RunnerInfo, ending: Ending) -> None:
    """Push mode: how a call ended (in the supervisor), before its sender hears it.

    :param ending: a ``pprunner.jobs.Finished``, ``Failed``, ``Lost`` or
        ``TimedOut`` (a call that is tried again after its worker died is not
        finished yet).
    """


# ---------------------------------------------------------------------------
# heartbeat
# ---------------------------------------------------------------------------


@hookspec
def pprunner_heartbeat(backend: Backend | None, runners: Sequence[RunnerInfo],
                       at: float) -> None:
    """Report the runners that are alive by OS-level check, each supervisor iteration.

    :param backend: the app's backend; None in push mode.
    :param runners: the supervisor itself (first) and its live workers.
    :param at: the time of the check (``time.time()``).

    The built-in implementation records them in the backend; other plugins
    (metrics, health files) may observe.
    """


# ---------------------------------------------------------------------------
# execute (in the worker)
# ---------------------------------------------------------------------------


@hookspec
def pprunner_worker_init(context: WorkerContext) -> None:
    """In a new worker process, after the app (pull mode) and the initializer
    were loaded and before the worker reports ready: open connections, warm
    caches, a host's bootstrap. An exception here is a boot failure."""


@hookspec
def pprunner_worker_exit(context: WorkerContext) -> None:
    """In a worker process that is about to exit normally (retired, stopped)."""


@hookspec
def pprunner_attempt_started(job: Invocation | Call, context: WorkerContext) -> None:
    """In the worker, a job begins: before it is resolved and run.

    Every attempt of a pulled invocation (a retry is a new attempt; one run
    nested in a waiting task too), and every pushed call, before the job's time
    limits start. Keep it quick: it is called for every job.
    """


@hookspec
def pprunner_attempt_ended(job: Invocation | Call, context: WorkerContext, outcome: str,
                           seconds: float) -> None:
    """In the worker, a job's outcome has been recorded (pull mode: stored in the
    backend; push mode: sent to the supervisor).

    :param outcome: ``"succeeded"``, ``"failed"`` (it raised, could not be
        resolved, or its result could not be stored), ``"retried"`` (pull mode:
        back to ``PENDING`` for another attempt) or ``"refused"`` (pull mode:
        this worker no longer owned it, another supervisor had taken it back).
    :param seconds: how long resolving and running it took.

    Not called for a job its worker did not finish: one handed back at a stop,
    or one whose worker died (the supervisor's [pprunner_worker_exited][] says
    what became of it). Like [pprunner_enqueue][], this hook and
    [pprunner_attempt_started][] are not called at all while nothing implements
    them; an implementation runs for every job, so keep it to a few microseconds.
    """


@hookspec(firstresult=True)
def pprunner_resolve_job(job: Invocation | Call, context: WorkerContext) -> Runnable | None:
    """Turn a job into what to call: a ``pprunner.jobs.Runnable(function, args,
    kwargs, task)``.

    Stops at first non-None result. The default looks a pulled invocation's
    task up in the app's registry (an allow-list: a name from a shared queue
    never imports anything) and decodes its payload with the app's codec; a
    pushed ``pprunner.jobs.Call`` is used as it is. A host whose jobs carry
    their own payload format resolves them here (return None for jobs that are
    not yours). An exception fails the job at once, unrun and without retries,
    named by its class (``UnknownTask``, ``SignatureInvalid``, an undecodable
    payload).
    """


@hookspec(firstresult=True)
def pprunner_execute(
    task: Task | None, invocation: Invocation | None, args: list[Any], kwargs: dict[str, Any],
    context: WorkerContext, function: Callable[..., Any], job: Invocation | Call,
) -> Any:
    """Run one job in the worker and return ``Returned(value)``.

    Stops at first non-None result, which must be a ``pprunner.Returned`` (so
    a task returning None is still an answer); the default calls
    ``function(*args, **kwargs)``. An exception raised here fails the job with
    that error. Use ``wrapper=True`` (or ``hookwrapper=True``) implementations
    to put context around every job (time limits, logging, tracing, metrics):

    ```python
    @pprunner.hookimpl(wrapper=True)
    def pprunner_execute(job):
        started = time.perf_counter()
        try:
            return (yield)
        finally:
            metrics.observe(getattr(job, "task", None) or job.name,
                            time.perf_counter() - started)
    ```

    :param function: what to call with ``args`` and ``kwargs`` (resolved by
        [pprunner_resolve_job][]).
    :param job: the pulled ``pprunner.invocation.Invocation`` or the
        pushed ``pprunner.jobs.Call``.
    :param task: the registered task (None in push mode).
    :param invocation: the pulled invocation (None in push mode).
    """


# ---------------------------------------------------------------------------
# pause-on-wait (in the worker, when a running task waits for results)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def pprunner_pause_on_wait(
    context: WorkerContext, waiter: Invocation | HostJob | Call, invocation_ids: Sequence[str],
    timeout: float | None, strategy: str, pending: Callable[[], Sequence[str]] | None,
) -> Sequence[Any] | None:
    """Wait, inside a running job, until the jobs it waits for are final: called
    for every job source alike. A pulled invocation waits for invocations
    (``handle.result()``, ``wait()``, ``gather()``: ``waiter`` is the
    ``pprunner.invocation.Invocation`` and ``pending`` is None); a host's job
    waits for the host's own jobs (a plugin calls ``context.wait_for_host``:
    ``waiter`` is the ``pprunner.consuming.HostJob`` or the pushed
    ``pprunner.jobs.Call``, ``invocation_ids`` are the host's ids, and
    ``pending()`` says which of them are not final yet, from the host's store).

    Stops at first non-None result: for invocations, the awaited invocations,
    final, in the order asked; for a host's jobs, their ids. Raise
    ``pprunner.errors.ResultTimeout`` when ``timeout`` runs out and
    ``pprunner.errors.WaitCycle`` for a wait that could never end.
    ``strategy`` is the name asked for (the call's, or the ``wait_strategy``
    setting); return None for names you do not implement, so the built-in
    ``nested``, ``lend`` and ``poll`` strategies (``pprunner.waiting``) still
    answer theirs. ``context.lend_slot()`` lends the worker's slot until the job
    ends, ``context.run_nested(invocation)`` runs a claimed invocation inside
    the waiting one, and ``backend.claim_one_of(runner_id, ids)`` claims one of
    the awaited invocations if it is still queued. For invocations the built-in
    strategies mark the waiter PAUSED meanwhile, so they need a backend with the
    ``pprunner.backend.Pausing`` capability and raise
    ``pprunner.errors.MissingCapability`` without it.
    """
