"""Commands for a running supervisor on this host: ``pprunner scale N``.

Each supervisor binds a UNIX datagram socket named after its runner id in a
per-user folder; its loop waits on it with everything else. Signals cannot
carry a number, and the backend is no place for host-local process control.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

FOLDER = Path(tempfile.gettempdir()) / f"pprunner-{os.getuid()}" / "control"


def remove_dead_sockets(folder: Path) -> None:
    """Unlink the UNIX datagram sockets in ``folder`` that no process has bound any
    more — left by processes that were killed: connecting to one is refused."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(entry.path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:
                pass  # not a socket of ours, or not ours to judge


class ControlSocket:
    """The supervisor's end: bound at boot, removed at stop."""

    def __init__(self, supervisor_id: str) -> None:
        FOLDER.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_dead_sockets(FOLDER)
        self.path = FOLDER / supervisor_id
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.socket.setblocking(False)

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
    """Deliver ``message``; OSError when no such supervisor listens on this host."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(message.encode(), str(FOLDER / supervisor_id))
