"""The per-user runtime folder: where control sockets and doorbells live.

A socket in a folder someone else can write to, or that someone else made,
can be removed or replaced by them: ``pprunner scale`` would talk to their
socket and workers' doorbells would go silent. So, as tmux and ssh-agent
do, the folder is ``$XDG_RUNTIME_DIR/pprunner`` when that variable names a
folder of this user's closed to others (systemd makes one per login),
otherwise ``<tempdir>/pprunner-<uid>``; it and each sub-folder are created
mode 0700, and one that exists already is used only when it is a real
folder (not a symlink), owned by this user and closed to group and others.
Anything else is refused with a :class:`~pprunner.errors.ConfigError` naming
the folder, never repaired: whoever made it may already have put things in it.

A SIGKILLed process cannot remove its sockets; :func:`prune` removes those
nobody listens on any more, and the folders they leave empty, when a
supervisor starts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError

#: how often a folder is made again when a concurrent :func:`prune` removed it (empty
#: then) between its creation and its use
REMAKE_ATTEMPTS = 5


def _unsafe(path: str | Path) -> str | None:
    """Why ``path`` may not hold our sockets (None: it may), judged without
    following a symlink; FileNotFoundError when there is nothing there."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not by this user (uid {os.getuid()})"
    if info.st_mode & 0o077:
        return f"is open to group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _made_safe(path: Path) -> Path:
    """``path`` created mode 0700 when missing; refused when it is not ours alone."""
    for _ in range(REMAKE_ATTEMPTS):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)  # the umask can only take bits away
        try:
            why = _unsafe(path)
            break
        except FileNotFoundError:
            continue  # pruned while empty, just now: make it again
    else:
        raise FileNotFoundError(f"{path} keeps vanishing")
    if why is not None:
        raise ConfigError(f"refusing the runtime folder {path}: it {why}; pprunner keeps "
                          "its control and doorbell sockets there, so it must be a folder "
                          "of this user's with mode 0700 (remove it and pprunner makes one)")
    return path


def top() -> Path:
    """Where the runtime folder is, created or not (see the module docstring)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        try:
            if _unsafe(xdg) is None:
                return Path(xdg) / "pprunner"
        except OSError:
            pass  # a stale variable: fall back as if it were not set
    return Path(tempfile.gettempdir()) / f"pprunner-{os.getuid()}"


def folder(name: str | None = None) -> Path:
    """The runtime folder, or its sub-folder ``name``, made if missing and checked.

    Raises ConfigError when either is not a folder of this user's alone.
    """
    path = _made_safe(top())
    return path if name is None else _made_safe(path / name)


def bind(folder_name: str, name: str) -> socket.socket:
    """A non-blocking UNIX datagram socket bound as ``name`` in sub-folder ``folder_name``
    (a socket file left there under that name is replaced)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for attempts_left in reversed(range(REMAKE_ATTEMPTS)):
            path = folder(folder_name) / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            try:
                sock.bind(str(path))
                break
            except FileNotFoundError:  # pruned while empty, just now: make it again
                if not attempts_left:
                    raise
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def remove_dead_sockets(path: str | Path) -> None:
    """Unlink the sockets in ``path`` that no process has bound any more — left by
    processes that were killed: connecting to one is refused. A live one stays."""
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if not stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                continue  # connecting to a plain file is refused too: not ours to judge
        except FileNotFoundError:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(entry.path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:
                pass  # a stream socket, or not ours to judge


def prune() -> None:
    """Remove what nobody listens on under the runtime folder: dead sockets, then the
    sub-folders left empty. Live sockets, and folders that are not ours alone, stay.

    Raises ConfigError when the runtime folder itself is not ours alone.
    """
    root = folder()
    for entry in os.scandir(root):
        try:
            if _unsafe(entry.path) is not None:
                continue  # refused when used, never emptied
        except FileNotFoundError:
            continue  # pruned by someone else meanwhile
        remove_dead_sockets(entry.path)
        with contextlib.suppress(OSError):  # not empty: someone listens there
            os.rmdir(entry.path)
