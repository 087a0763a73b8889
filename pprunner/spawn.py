"""What the supervisor hands a new worker, and how it describes a worker's end."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import attrs

from .invocation import Invocation
from .jobs import Call

#: the slot of a spare worker (booted ahead, holding no slot) until the pool gives it one
SPARE_SLOT = 0


@attrs.frozen
class WorkerSpec:
    """Everything a worker process receives: ids, plain settings, sync primitives.

    Never a pickled app: the worker imports ``app_path`` itself, so a worker
    runs exactly the code on disk, whatever the start method.
    """

    runner_id: str
    #: its place in the pool, from 1; :data:`SPARE_SLOT` for a spare
    slot: int
    supervisor_id: str
    #: ``module:attribute`` of the App (pull mode); None in push mode, where the
    #: worker runs the calls its supervisor hands it
    app_path: str | None
    #: the supervisor's effective settings (``Config.to_dict()``)
    settings: dict[str, Any]
    #: set by the supervisor for a graceful stop (a :class:`StopFlag`)
    stop_event: Any
    #: read end of a pipe whose write end only the supervisor holds: EOF
    #: means the supervisor is gone, and the worker stops
    lifeline: Any
    #: the write end's descriptor, closed at once by a forked child
    lifeline_writer_fd: int
    #: the worker's end of its duplex pipe to the supervisor (:mod:`pprunner.channel`)
    channel: Any
    #: what the worker runs may name functions of the supervisor's ``__main__``
    #: (push mode, unless its host says otherwise: ``Dispatcher(calls_from_main=)``)
    calls_from_main: bool
    #: called in the worker before it reports ready (a host's own bootstrap, an
    #: Executor's ``initializer``); if it raises, no worker can serve
    initializer: Call | None = None
    #: what every worker builds the same way before its initializer: importing the
    #: host's app, say. Called once in the template (``start_method = "template"``),
    #: whose forks inherit what it built, else in each worker; so it must start no
    #: thread and open no connection (those belong in the initializer)
    prepare: Call | None = None
    #: modules the worker imports and registers as plugins before it boots: a host
    #: adapter's worker-side hooks (its supervisor registered them too)
    plugin_modules: tuple[str, ...] = ()
    #: the supervisor's entry points of the ``pprunner`` group: the worker loads
    #: these plugins without scanning the installed distributions itself
    plugin_entries: tuple[Any, ...] = ()
    #: host-consumed mode: makes the host's consumer this worker runs
    #: (:mod:`pprunner.consuming`); None: it claims or is handed its jobs
    consumer: Call | None = None
    #: host-consumed mode: where the worker records the job it runs, for its supervisor
    #: to read after a death (:class:`pprunner.held.HeldJob`); None: it reports each job
    held: Any = None


class StopFlag:
    """The supervisor's graceful stop, seen by every worker at once: an event
    made of a pipe instead of semaphores.

    A multiprocessing Event is five named semaphores, which a SIGKILLed
    supervisor leaves to the resource tracker to remove, with a warning that
    they leaked. Here ``set()`` writes one byte that nobody reads, so the read
    end stays readable for every worker, and ``is_set()`` is a poll that
    consumes nothing. Workers get the read end only; the supervisor dying
    makes it readable too (EOF), which also means stop.
    """

    def __init__(self, context: Any) -> None:
        self._reader, self._writer = context.Pipe(duplex=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"_reader": self._reader, "_writer": None}  # only the supervisor sets it

    def set(self) -> None:
        if self._writer is not None and not self.is_set():
            self._writer.send_bytes(b"stop")

    def is_set(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        poller = select.poll()
        poller.register(self._reader.fileno(), select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))

    def close(self) -> None:
        for end in (self._reader, self._writer):
            if end is not None:
                end.close()


class WorkerProcess(Protocol):
    """What a spawn hook returns; :class:`multiprocessing.Process` fits."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


@attrs.frozen
class WorkerExit:
    """How a worker ended, for logs and the ``pprunner_worker_exited`` hook."""

    #: the process's exit code; negative means killed by that signal
    exitcode: int | None
    #: the signal's name (``SIGKILL``) when a signal ended it
    signal: str | None
    #: e.g. ``"was killed by SIGKILL (perhaps out of memory?)"``, or ``"was killed by
    #: SIGKILL from the supervisor: stopping at once"`` for a signal the supervisor sent
    description: str
    #: the invocations it held, as they are after being rerouted (pull mode)
    invocations: tuple[Invocation, ...] = ()
    #: the call it held (push mode): run again, or its sender told it was lost
    calls: tuple[Call, ...] = ()
    #: the jobs its host's consumer ran (host-consumed mode), settled by the host plugin
    jobs: tuple[Any, ...] = ()
    #: True when the supervisor asked it to stop
    requested: bool = False
    #: why, in one word: ``recycled`` (it reached ``max_tasks_per_child`` or
    #: ``max_memory_per_child``, or asked to be replaced), ``retired`` (reload,
    #: scale-down, a lent slot given back), ``stopped`` (the supervisor stopping),
    #: ``time_limit`` or ``boot_timeout`` (killed by the supervisor for it),
    #: ``killed`` (killed or signalled at a host's request), ``signal`` (a signal
    #: nobody here sent: the OOM killer, ``kill -9``, a crash) or ``exit_code``
    #: (it exited by itself: a failed boot, ``os._exit``)
    cause: str = "exit_code"
    #: its peak resident memory in bytes, as it last reported (0: unknown)
    peak_memory: int = 0


def describe_exit(exitcode: int | None,
                  sent: Mapping[int, str] | None = None) -> tuple[str | None, str]:
    """(signal name or None, readable description) of an exit code.

    ``sent`` maps the signals the supervisor sent this process to why it sent
    them: a death by one of those says so, and only a SIGKILL nobody here sent
    gets the "perhaps out of memory?" hint (the kernel's OOM killer sends one).
    """
    if exitcode is None:
        return None, "is still running"
    if exitcode >= 0:
        return None, f"exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    why = (sent or {}).get(-exitcode)
    if why is not None:
        return name, f"was killed by {name} from the supervisor: {why}"
    hint = " (perhaps out of memory?)" if -exitcode == signal.SIGKILL else ""
    return name, f"was killed by {name}{hint}"


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block SIGINT/SIGTERM while a child starts.

    The child inherits the mask, so a Ctrl-C during its boot cannot kill it
    before it has installed its own handlers; the worker unblocks them.
    """
    watched = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def main_module_hidden() -> Iterator[None]:
    """Start children without re-running the parent's ``__main__`` script.

    multiprocessing's spawn and forkserver re-import the main module in every
    child; a worker never needs it (it imports the app by path), and a
    script that enqueues at top level would enqueue again in each worker.
    """
    main = sys.modules["__main__"]
    saved: dict[str, Any] = {name: main.__dict__[name] for name in ("__file__", "__spec__")
             if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def close_inherited_fd(fd: int) -> None:
    """Close a descriptor a forked child inherited but must not hold."""
    with contextlib.suppress(OSError):
        os.close(fd)
