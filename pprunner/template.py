"""Workers forked from a template process: a new worker serves in milliseconds.

A fresh interpreter takes 0.1-0.5 s to import pprunner, the host and the app
before its worker can serve. That is the time a dead worker's slot stays empty,
and the time a task waiting in ``lend_slot()`` waits for the extra worker that
runs what it waits for. With ``start_method = "template"`` the supervisor
starts one more process, the template, which imports the worker's side of
pprunner and the app once, then forks every worker the supervisor asks for:
a fork of a booted interpreter serves within a few milliseconds.

The template only imports and forks; it runs no task and holds no connection
of its own, so what a worker inherits is what a fresh interpreter would have
built. An import that starts a thread, or opens a socket, makes forking unsafe
(the thread would be missing in the child, holding whatever lock it held; a
database connection made at import would be shared by every worker): the
template says so and exits, and the supervisor starts its workers fresh, with
a warning. Each
spec is unpickled in the template before the fork, so the modules it names
(the host's app, its initializer) are imported once, for every later worker.

The template reaps its workers and reports how each ended; the supervisor
waits on a pidfd of each (sent back with the fork), so it sees a death at
once although the worker is not its child. A reload starts a new template
(new code); the old one stays until its last worker has been reaped. Linux only
(pidfds); elsewhere ``template`` starts workers fresh.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import pickle
import select
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from . import launch, process_group
from .jobs import Call
from .spawn import WorkerSpec, signals_blocked

logger = logging.getLogger("pprunner.supervisor")

#: what the new interpreter runs: the parent's sys.path first (pprunner itself may be
#: importable only through it), then the template's loop on the same socket
_BOOTSTRAP = ("import pickle, socket, sys; control = socket.socket(fileno=int(sys.argv[1])); "
              "sys.path[:], preload = pickle.loads(control.recv(1 << 20)); "
              "from pprunner.template import serve; serve(control, preload)")
#: largest message either side sends (a pickled spec is a few KiB)
MESSAGE_SIZE = 1 << 20
#: the exit code of a worker whose template died before it could say how the worker ended
UNKNOWN_EXIT = 255
#: how long the supervisor waits for the template's word that a dead worker was reaped
#: (it reaps on SIGCHLD: a millisecond, unless the machine is swamped)
REPORT_WITHIN = 5.0


@attrs.frozen
class Ready:
    """The template has imported what it preloads; ``unsafe`` says what an import
    started that a fork must not copy (then it forks nothing and exits)."""

    pid: int
    unsafe: str | None = None


@attrs.frozen
class Forked:
    """A worker was forked; its pidfd travels with this message."""

    pid: int


@attrs.frozen
class ForkFailed:
    error: str


@attrs.frozen
class Exited:
    """A worker of the template ended and was reaped; ``status`` as ``os.waitpid`` says."""

    pid: int
    status: int


class TemplateGone(Exception):
    """The template process exited (or never started): a new one may do."""


class TemplateRefused(TemplateGone):
    """The template cannot fork this app's workers (see :class:`Ready`, :class:`ForkFailed`):
    no new one would."""


# ---------------------------------------------------------------------------
# the supervisor's side
# ---------------------------------------------------------------------------


class Template:
    """A template process, as the supervisor drives it (see the module docstring)."""

    def __init__(self, preload: tuple[str, ...], boot_timeout: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        try:
            with signals_blocked():  # Ctrl-C is the supervisor's: the template outlives it
                self._process = subprocess.Popen(
                    [sys.executable, *flags, "-c", _BOOTSTRAP, str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._control = ours
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._workers: set[int] = set()
        self._retired = False
        self._send((list(sys.path), preload))
        try:
            ready = self._receive(boot_timeout)[0]
        except TemplateGone:
            self.close()
            raise
        if ready.unsafe:
            self.close()
            raise TemplateRefused(f"the template process cannot fork workers: {ready.unsafe}")
        self.pid = ready.pid
        self._boot_timeout = boot_timeout

    def fork(self, spec: WorkerSpec) -> TemplateWorker:
        """A worker for ``spec``, forked from the template."""
        data, descriptors = launch.pickled_spec(spec)
        # SIGINT and SIGTERM wait for the reply: a handler raising between the request
        # and its reply would leave the next fork reading this one's worker
        with self._lock, signals_blocked():
            try:
                socket.send_fds(self._control, [data], descriptors)
                while True:  # the first fork may import the app (the spec's prepare)
                    message, fds = self._receive(self._boot_timeout)
                    if isinstance(message, Forked):
                        self._workers.add(message.pid)
                        return TemplateWorker(self, message.pid, fds[0])
                    if isinstance(message, ForkFailed):
                        raise TemplateRefused(message.error)
            except OSError as exc:
                raise TemplateGone(f"the template process is gone ({exc})") from exc

    def exit_status(self, pid: int) -> int:
        """How worker ``pid`` (known to have ended) ended, as multiprocessing says it."""
        with self._lock:
            deadline = time.monotonic() + REPORT_WITHIN
            while pid not in self._exits:
                left = deadline - time.monotonic()
                try:
                    self._receive(max(left, 0))
                except (OSError, TemplateGone):
                    logger.warning("the template process is gone: how worker pid %d ended "
                                   "is unknown", pid)
                    return UNKNOWN_EXIT
            return os.waitstatus_to_exitcode(self._exits.pop(pid))

    def forget(self, pid: int) -> None:
        """Worker ``pid`` was joined; a retired template closes after its last one."""
        self._workers.discard(pid)
        if self._retired and not self._workers:
            self.close()

    def retire(self) -> None:
        """Fork nothing more; close once every worker forked so far is reaped."""
        self._retired = True
        if not self._workers:
            self.close()

    def close(self) -> None:
        self._control.close()  # the template's end reads EOF: it exits
        try:
            self._process.wait(REPORT_WITHIN)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _send(self, message: Any) -> None:
        self._control.send(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def _receive(self, timeout: float | None) -> tuple[Any, list[int]]:
        """The template's next message; an :class:`Exited` is also kept for later."""
        self._control.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self._control, MESSAGE_SIZE, 1)
        except TimeoutError:
            raise TemplateGone(f"the template process said nothing for {timeout} s") from None
        if not data:
            raise TemplateGone("the template process exited")
        message = pickle.loads(data)
        if isinstance(message, Exited):
            self._exits[message.pid] = message.status
        return message, fds


class TemplateWorker:
    """A worker forked by a template; a :class:`~pprunner.spawn.WorkerProcess`. Its
    sentinel is a pidfd: readable once the process has ended, although the template,
    not the supervisor, is its parent."""

    def __init__(self, template: Template, pid: int, pidfd: int) -> None:
        self._template = template
        self.pid = pid
        self.sentinel = pidfd
        self._exitcode: int | None = None

    def __repr__(self) -> str:
        return f"<TemplateWorker pid={self.pid} exitcode={self.exitcode}>"

    @property
    def exitcode(self) -> int | None:
        if self._exitcode is None and self.sentinel >= 0 and _readable(self.sentinel, 0):
            self._exitcode = self._template.exit_status(self.pid)
        return self._exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        if self.sentinel < 0 or not _readable(self.sentinel, timeout):
            return
        self.exitcode  # noqa: B018 - learn how it ended before the pidfd goes
        os.close(self.sentinel)  # only now: the supervisor has unregistered it
        self.sentinel = -1
        self._template.forget(self.pid)

    def _signal(self, signum: int) -> None:
        """Through the pidfd: never a process that took over a reaped worker's pid."""
        if self.sentinel >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.sentinel, signum)


def _readable(fd: int, timeout: float | None) -> bool:
    poller = select.poll()  # no descriptor of its own: the supervisor asks every pass
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


#: each supervisor's template (by supervisor id), started with its first worker
_templates: dict[str, Template] = {}
#: supervisors whose workers start fresh: their template could not fork them
_refused: set[str] = set()


def fork_for(spec: WorkerSpec) -> TemplateWorker | None:
    """A worker for ``spec`` forked from its supervisor's template, started with the
    supervisor's first worker; None where no template can fork it (a call that may name
    the parent's ``__main__``, no pidfds, an app whose import starts threads): the caller
    starts it fresh."""
    if spec.calls_from_main or not launch.supported() or spec.supervisor_id in _refused:
        return None
    for _ in range(2):  # a template that died is replaced once
        template = _templates.get(spec.supervisor_id)
        try:
            if template is None:
                template = _templates[spec.supervisor_id] = Template(
                    preloaded_by(spec), spec.settings["boot_timeout"])
            return template.fork(spec)
        except TemplateGone as exc:
            logger.warning("%s", exc)
            retire(spec.supervisor_id)
            if isinstance(exc, TemplateRefused):
                break
    logger.warning("supervisor %s starts its workers fresh from now on", spec.supervisor_id)
    _refused.add(spec.supervisor_id)
    return None


def retire(supervisor_id: str) -> None:
    """The supervisor reloads or stops: its template forks nothing more (the next worker
    gets a new one, which imports the code as it is now) and exits once its workers are
    reaped."""
    template = _templates.pop(supervisor_id, None)
    if template is not None:
        template.retire()


def preloaded_by(spec: WorkerSpec) -> tuple[str, ...]:
    """What a template imports before its first fork: the app and the plugins' modules."""
    modules = [*spec.plugin_modules,
               *(entry.value.partition(":")[0].strip() for entry in spec.plugin_entries)]
    if spec.app_path is not None:
        modules.append(spec.app_path.partition(":")[0])
    return tuple(modules)


# ---------------------------------------------------------------------------
# the template process
# ---------------------------------------------------------------------------


def serve(control: socket.socket, preload: list[str]) -> None:
    """The template's life: preload, then fork a worker per spec until EOF."""
    from .proctitle import set_title

    set_title("pprunner template")
    importlib.import_module("pprunner.worker")  # the worker's side, once for every worker
    for module in preload:
        with contextlib.suppress(Exception):  # the worker's own import reports it, at boot
            importlib.import_module(module)
    unsafe = _unsafe_to_fork(control)
    _send(control, Ready(os.getpid(), unsafe))
    if unsafe:
        return
    process_group.become_subreaper()  # a killed worker's group is reaped here, at once
    forked: set[int] = set()
    wakeup_reader, wakeup_writer = os.pipe()
    os.set_blocking(wakeup_writer, False)
    signal.set_wakeup_fd(wakeup_writer)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector
    watched = selectors.DefaultSelector()
    watched.register(control, selectors.EVENT_READ)
    watched.register(wakeup_reader, selectors.EVENT_READ)

    def leave_template() -> None:
        """In a forked worker: drop what only the template's loop uses."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        watched.close()
        control.close()
        os.close(wakeup_reader)
        os.close(wakeup_writer)

    while True:
        for key, _ in watched.select():
            if key.fileobj is wakeup_reader:
                os.read(wakeup_reader, 4096)
                continue
            try:
                data, fds, _, _ = socket.recv_fds(control, MESSAGE_SIZE, 16)
            except ConnectionError:
                data = b""
            if not data:
                return  # the supervisor closed its end, or died: its workers see their lifelines
            pid = _fork_worker(control, data, fds, leave_template)
            if pid is not None:
                forked.add(pid)
        _reap(control, forked)


def _fork_worker(control: socket.socket, data: bytes, fds: list[int],
                 leave_template: Callable[[], None]) -> int | None:
    """Fork a worker for the spec in ``data``; its pid, or None when none was forked
    (the supervisor is told why)."""
    try:  # imports what the spec names, here, once for every later worker
        spec, handed = launch.unpickled_spec(io.BytesIO(data), fds)
    except Exception as exc:  # the supervisor is told, and starts it fresh
        for fd in fds:
            os.close(fd)
        _send(control, ForkFailed(f"unpickling the spec failed: {exc!r}"))
        return None
    if spec.prepare is not None:
        _prepare(spec.prepare)
    unsafe = _unsafe_to_fork(control, fds)
    pid = -1 if unsafe else os.fork()
    if pid == 0:
        leave_template()
        _be_worker(spec)
    for descriptor in handed:
        descriptor.close()  # the worker holds them now
    if unsafe:
        _send(control, ForkFailed(unsafe))
        return None
    pidfd = os.pidfd_open(pid)  # before the worker can be reaped: never a stale pid
    try:
        socket.send_fds(control, [pickle.dumps(Forked(pid))], [pidfd])
    finally:
        os.close(pidfd)
    return pid


def _prepare(prepare: Call) -> None:
    """The spec's preparation, here once for every worker; if it fails, each worker
    calls it itself, and its boot fails with the error, as without a template."""
    from .worker import prepare_once

    with contextlib.suppress(Exception):
        prepare_once(prepare)


def _be_worker(spec: WorkerSpec) -> None:
    """The forked child's side: be the worker, and never return into the template's loop."""
    code = 1
    try:
        from .worker import main

        main(spec)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # whatever it is, the worker's exit says it failed
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _reap(control: socket.socket, forked: set[int]) -> None:
    """Reap whatever ended under the template: its workers, whose exit the supervisor
    is told, and the orphans of their process groups (the template is their subreaper,
    so a killed task's subprocesses do not linger as zombies of PID 1)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        if pid in forked:
            forked.discard(pid)
            _send(control, Exited(pid, status))


def _unsafe_to_fork(control: socket.socket, handed: Sequence[int] = ()) -> str | None:
    """Why forking here would hurt the workers, if it would: a thread an import started
    (a fork leaves it behind, holding whatever lock it held), or a socket one opened (a
    database or broker connection every worker would share, their messages mixed).
    Not counted: standard streams (a socket under systemd's journal), the control
    socket, and the worker's own pipes being ``handed`` to it."""
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        return (f"importing the app started thread(s) {', '.join(others)}, and a fork "
                f"would leave them behind holding their locks")
    mine = {0, 1, 2, control.fileno(), *handed}
    sockets = [fd for fd in _open_descriptors() if fd not in mine and _is_socket(fd)]
    if sockets:
        return (f"importing the app opened {len(sockets)} socket(s) (descriptors "
                f"{', '.join(map(str, sockets))}: a connection at import time?), which "
                f"every forked worker would share")
    return None


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:  # the listing's own descriptor, closed since
        return False


def _send(control: socket.socket, message: Any) -> None:
    control.send(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
