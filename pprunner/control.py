"""Commands for a running supervisor on this host: ``pprunner scale N``.

Each supervisor binds a UNIX datagram socket named after its runner id in
the ``control`` sub-folder of the runtime folder (:mod:`pprunner.runtime`);
its loop waits on it with everything else. Signals cannot carry a number,
and the backend is no place for host-local process control.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from . import runtime

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
