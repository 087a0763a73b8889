"""A worker started as a fresh interpreter, without multiprocessing's spawn.

multiprocessing's ``spawn`` starts its resource tracker — a process of its own,
~10 MiB, for the life of the supervisor — with the first child, and pickles
the parent's ``__main__`` preparation for every child. A pull-mode worker
needs neither: it creates no semaphores or shared memory the tracker would
clean up (the stop flag is a pipe), and it imports the app by path. So on
Linux (where :func:`os.pidfd_open` gives a process sentinel) the default
spawn hook starts it here: ``python -c`` reads the parent's ``sys.path`` and
the :class:`~pprunner.spawn.WorkerSpec` from a pipe, its connections passed
as inherited descriptors, and runs :func:`pprunner.worker.main`.

A worker that does use multiprocessing's synchronisation or shared memory
starts a tracker of its own on first use, as any Python program does. Push
mode keeps multiprocessing's spawn: a pushed call may name a function of the
parent's ``__main__``, which only multiprocessing's preparation re-imports;
a host whose calls never do (``Dispatcher(calls_from_main=False)``: the
Celery, RQ and pynenc plugins) has its workers started here too.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import IO, Any

from .held import HeldJob
from .spawn import WorkerSpec, signals_blocked

#: what the new interpreter runs: the parent's sys.path first (pprunner itself may be
#: importable only through it), then the rest from the same pipe
_BOOTSTRAP = ("import pickle, sys; stream = open(int(sys.argv[1]), 'rb'); "
              "sys.path[:] = pickle.load(stream); "
              "from pprunner.launch import run_worker; run_worker(stream)")


@functools.cache
def supported() -> bool:
    """Whether workers can be started here: a pidfd is the process sentinel (Linux
    5.3 and later; an older kernel, or a sandbox, may refuse the call)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class _SpecPickler(pickle.Pickler):
    """Pickles a spec's connections and held-job memory as places in a list of
    descriptors passed beside it."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.descriptors: list[int] = []

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Connection):
            self.descriptors.append(obj.fileno())
            return ("connection", len(self.descriptors) - 1, obj.readable, obj.writable)
        if isinstance(obj, HeldJob):
            self.descriptors.append(obj.fd)
            return ("held", len(self.descriptors) - 1)
        return None


class _SpecUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], descriptors: Sequence[int]) -> None:
        super().__init__(file)
        self.descriptors = descriptors
        self.handed: list[Connection | HeldJob] = []

    def persistent_load(self, pid: Any) -> Any:
        kind, place, *modes = pid
        made = (HeldJob(self.descriptors[place]) if kind == "held"
                else Connection(self.descriptors[place], *modes))
        self.handed.append(made)
        return made


def pickled_spec(spec: WorkerSpec) -> tuple[bytes, list[int]]:
    """``spec`` as bytes, and the descriptors of its connections, to pass beside them."""
    stream = io.BytesIO()
    pickler = _SpecPickler(stream)
    pickler.dump(spec)
    return stream.getvalue(), pickler.descriptors


def unpickled_spec(stream: IO[bytes], descriptors: Sequence[int]
                   ) -> tuple[WorkerSpec, list[Connection | HeldJob]]:
    """The spec :func:`pickled_spec` made, its connections and held-job memory over
    ``descriptors`` (also returned, for a process that hands them on and must close its
    own copies)."""
    unpickler = _SpecUnpickler(stream, descriptors)
    return unpickler.load(), unpickler.handed


class LaunchedWorker:
    """A worker process started by :func:`start`; a
    :class:`~pprunner.spawn.WorkerProcess`, as :class:`multiprocessing.Process` is."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        #: readable once the process has exited; closed once it is reaped by join()
        self.sentinel = os.pidfd_open(process.pid)

    def __repr__(self) -> str:
        return f"<LaunchedWorker pid={self.pid} exitcode={self.exitcode}>"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        """As multiprocessing says it: the exit status, or -N for signal N."""
        return self._process.poll()

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self._process.terminate()  # a no-op once it is reaped: never a reused pid

    def kill(self) -> None:
        self._process.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
        if self._process.returncode is not None and self.sentinel >= 0:
            os.close(self.sentinel)  # only now: the supervisor has unregistered it
            self.sentinel = -1


def start(spec: WorkerSpec) -> LaunchedWorker:
    """Start a worker for ``spec`` in a fresh interpreter (see the module docstring)."""
    data, descriptors = pickled_spec(spec)  # before anything starts: a spec that does not
    stream = io.BytesIO()                   # pickle raises here
    pickle.dump(sys.path, stream, pickle.HIGHEST_PROTOCOL)
    pickle.dump(descriptors, stream, pickle.HIGHEST_PROTOCOL)
    stream.write(data)
    reader, writer = os.pipe()
    try:
        # the interpreter's own flags (-O, -X dev, -W ...) carry over, as multiprocessing's
        # spawn carries them, through the same helper
        flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        with signals_blocked():  # the child unblocks them once its handlers are set
            process = subprocess.Popen(
                [sys.executable, *flags, "-c", _BOOTSTRAP, str(reader)],
                stdin=subprocess.DEVNULL, pass_fds=(reader, *descriptors))
    except BaseException:
        os.close(writer)
        raise
    finally:
        os.close(reader)
    worker = LaunchedWorker(process)
    try:
        view = memoryview(stream.getvalue())
        while view:
            view = view[os.write(writer, view):]
    except BrokenPipeError:
        pass  # it died before reading: its sentinel says so, and the supervisor how
    finally:
        os.close(writer)
    return worker


def run_worker(stream: IO[bytes]) -> None:
    """The child's side: read the spec, then be a worker (:func:`pprunner.worker.main`)."""
    with stream:
        descriptors = pickle.load(stream)  # inherited under the same numbers
        spec, _ = unpickled_spec(stream, descriptors)
    from .worker import main

    main(spec)
