"""The runtime folder of control sockets and doorbells: this user's alone, or refused;
and pruned of what killed processes left when a supervisor starts."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from pprunner import App, ConfigError, ExitCode, control
from pprunner_plugins._doorbell import Doorbell
from tests.conftest import RUN, cli_env, run_cli

#: the database a test doorbell rings for; any key will do
KEY = "/some/jobs.db"


@contextlib.contextmanager
def control_socket() -> Iterator[Path]:
    """A supervisor's control socket, as bound at its boot; yields its path."""
    bound = control.ControlSocket("a1b2c3d4e5f6")
    try:
        yield bound.path
    finally:
        bound.close()


@contextlib.contextmanager
def doorbell() -> Iterator[Path]:
    """A claimer's doorbell socket; yields its path."""
    bell = Doorbell(KEY)
    try:
        bell.listen("w1")
        yield bell.folder / "w1"
    finally:
        bell.close()


BINDERS = [pytest.param(control_socket, id="control"), pytest.param(doorbell, id="doorbell")]
Binder = Callable[[], AbstractContextManager[Path]]


def assert_refused(binder: Binder, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)), binder():
        pass


def sub_folder(binder: Binder, top: Path) -> Path:
    """The sub-folder of the runtime folder ``top`` that ``binder`` binds in."""
    return top / "control" if binder is control_socket else top / Doorbell(KEY).folder.name


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $XDG_RUNTIME_DIR: the runtime folder is <tempdir>/pprunner-<uid>, with the
    temp directory in this test's own folder and the usual umask."""
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    umask = os.umask(0o022)
    yield tmp_path
    os.umask(umask)


@pytest.fixture
def top(tempdir: Path) -> Path:
    return tempdir / f"pprunner-{os.getuid()}"


@pytest.mark.parametrize("binder", BINDERS)
def test_the_folders_are_made_closed_to_group_and_others(binder: Binder, top: Path) -> None:
    with binder() as path:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert path.parent.parent == top
        assert (mode(top), mode(path.parent)) == (0o700, 0o700)


@pytest.mark.parametrize("binder", BINDERS)
@pytest.mark.parametrize("which", ["top", "sub-folder"])
def test_a_folder_made_beforehand_open_to_others_is_refused(
        binder: Binder, which: str, top: Path) -> None:
    top.mkdir(mode=0o700)
    unsafe = top if which == "top" else sub_folder(binder, top)
    unsafe.mkdir(exist_ok=True)
    unsafe.chmod(0o755)
    assert_refused(binder, f"refusing the runtime folder {unsafe}: it is open to group or "
                           "others (mode 0755)")
    assert not any(p.is_socket() for p in top.rglob("*")), "bound in it all the same"
    assert mode(unsafe) == 0o755, "refused, never repaired"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns takes root")
@pytest.mark.parametrize("binder", BINDERS)
def test_a_folder_another_user_owns_is_refused(binder: Binder, top: Path) -> None:
    top.mkdir(mode=0o700)
    os.chown(top, 12345, -1)
    assert_refused(binder, f"{top}: it is owned by uid 12345, not by this user "
                           f"(uid {os.getuid()})")


@pytest.mark.parametrize("binder", BINDERS)
def test_a_symlink_is_refused_even_to_a_safe_folder(
        binder: Binder, top: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    top.symlink_to(target)
    assert_refused(binder, f"{top}: it is a symlink")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("binder", BINDERS)
def test_xdg_runtime_dir_is_used_when_it_is_this_users_alone(
        binder: Binder, tempdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    with binder() as path:
        assert path.parent.parent == xdg / "pprunner"
    xdg.chmod(0o755)  # not a proper runtime dir: the temp directory is used instead
    with binder() as path:
        assert path.parent.parent == tempdir / f"pprunner-{os.getuid()}"


def test_the_command_line_refuses_an_unsafe_folder_in_one_line(
        top: Path, tmp_path: Path) -> None:
    top.mkdir()
    top.chmod(0o755)
    env = cli_env(f"sqlite:///{tmp_path}/jobs.db", TMPDIR=str(tmp_path))
    done = run_cli(*RUN, "--burst", env=env)
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert done.stderr.splitlines() == [
        f"pprunner: error: refusing the runtime folder {top}: it is open to group or others "
        "(mode 0755); pprunner keeps its control and doorbell sockets there, so it must be a "
        "folder of this user's with mode 0700 (remove it and pprunner makes one)"]


def dead_socket(path: Path) -> Path:
    """A socket file whose process is gone (as after a SIGKILL): bound, then closed."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    return path


@pytest.mark.slow
def test_a_starting_supervisor_prunes_what_nobody_listens_on(
        app: App, supervise, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))  # the workers inherit it
    root = xdg / "pprunner"
    root.mkdir(mode=0o700)
    dead = [dead_socket(root / "0123456789abcdef" / "w1"),
            dead_socket(root / "control" / "a1b2c3d4e5f6")]
    empty = root / "fedcba9876543210"
    empty.mkdir(mode=0o700)
    plain = root / "0000000000000abc" / "notes.txt"  # not a socket: not pprunner's to judge
    plain.parent.mkdir(mode=0o700)
    plain.write_text("kept")
    live = root / "00000000000000ff" / "w2"
    live.parent.mkdir(mode=0o700)
    listener = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys\n"
         "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])\n"
         "print('bound', flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "bound\n"
        supervisor = supervise(processes=1)
        assert [p for p in dead if p.exists()] == []
        assert not empty.exists()
        assert live.is_socket(), "a live socket of another process was pruned"
        assert plain.read_text() == "kept"
        assert list((root / "control").iterdir()) == [
            root / "control" / supervisor.id]
    finally:
        listener.communicate(input="", timeout=10)
