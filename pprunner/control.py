"""Commands for a running supervisor on this host: ``pprunner scale N``.

Each supervisor binds a UNIX datagram socket named after its runner id in
the ``control`` sub-folder of the runtime folder (:mod:`pprunner.runtime`);
its loop waits on it with everything else. Signals cannot carry a number,
and the backend is no place for host-local process control.

:func:`scale` is the one way to ask: ``pprunner scale`` prints what it
answers, the web dashboard shows it.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import time
from pathlib import Path

import attrs

from . import runtime
from .backend import Admin
from .invocation import RunnerInfo, RunnerKind, this_host
from .liveness import lost_because

#: the sub-folder of the runtime folder that holds control sockets
SUB_FOLDER = "control"


class ControlSocket:
    """The supervisor's end: bound at boot, removed at stop."""

    def __init__(self, supervisor_id: str) -> None:
        self.socket = runtime.bind(SUB_FOLDER, supervisor_id)
        self.path = Path(self.socket.getsockname())

    def fileno(self) -> int:
        return self.socket.fileno()

    def receive(self) -> list[str]:
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(self.socket.recv(256).decode(errors="replace"))
        return messages

    def close(self) -> None:
        self.socket.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def send(supervisor_id: str, message: str) -> None:
    """Deliver ``message``. FileNotFoundError or ConnectionRefusedError when no such
    supervisor listens on this host (any more); ConfigError when the runtime folder is
    not this user's alone."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(message.encode(), str(runtime.folder(SUB_FOLDER) / supervisor_id))


class Outcome(enum.Enum):
    """What became of one part of a :func:`scale` request."""

    SENT = "sent"  # the supervisor has the command
    SKIPPED = "skipped"  # a lost supervisor among several asked: not an error
    ERROR = "error"


@attrs.frozen
class ScaleNotice:
    """One line of a :func:`scale` request's answer."""

    outcome: Outcome
    text: str


def scale(backend: Admin, processes: int, *, dead_after: float,
          supervisor_id: str | None = None) -> list[ScaleNotice]:
    """Tell every live supervisor on this host (or only ``supervisor_id``) to run
    ``processes`` workers; a notice per supervisor, an ERROR one when none was reached
    or the one asked for is gone. Lost ones (by :func:`~pprunner.liveness.lost_because`,
    as ``status`` judges them) are skipped."""
    here, now = this_host(), time.time()
    supervisors = [r for r in backend.runners()
                   if r.kind is RunnerKind.SUPERVISOR and r.host == here
                   and supervisor_id in (None, r.id)]
    notices, alive = [], []
    for runner in supervisors:
        if lost_because(runner, now=now, dead_after=dead_after) is None:
            alive.append(runner)
        elif supervisor_id:  # the one asked for
            return [ScaleNotice(Outcome.ERROR, _gone(runner, now))]
        else:
            notices.append(ScaleNotice(Outcome.SKIPPED, _gone(runner, now)))
    if not alive:
        return [*notices, ScaleNotice(
            Outcome.ERROR, f"no running supervisor of this app on {here}"
            + (f" with id {supervisor_id}" if supervisor_id else ""))]
    for runner in alive:
        try:
            send(runner.id, f"scale {processes}")
        except (FileNotFoundError, ConnectionRefusedError):  # died since its last heartbeat
            notices.append(ScaleNotice(Outcome.ERROR, _gone(runner, now)))
        except OSError as exc:
            notices.append(ScaleNotice(
                Outcome.ERROR, f"supervisor {runner.id} (pid {runner.pid}) did not take "
                               f"the command: {exc}"))
        else:
            notices.append(ScaleNotice(
                Outcome.SENT, f"supervisor {runner.id} (pid {runner.pid}): scaling to "
                              f"{processes}"))
    return notices


def _gone(supervisor: RunnerInfo, now: float) -> str:
    return (f"supervisor {supervisor.id} (pid {supervisor.pid}) is not running any more "
            f"(last heartbeat {now - supervisor.heartbeat_at:.0f} s ago)")
