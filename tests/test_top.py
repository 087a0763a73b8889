"""``pprunner top``: what it reads, and the command driven as a person would.

The screen tests start a real supervisor whose workers run tasks, run ``pprunner
top`` in a detached tmux session of a fixed size on a socket of the test's own,
read the screen with ``capture-pane`` until it shows what runs, check it against
the store, and quit with ``q`` or Ctrl-C. The command runs inside ``sh``, which
writes its exit status and the terminal's modes (``stty -a``) to files once it
ends: proof that it exited 0 and gave the terminal back. Without tmux (or
Textual) they are skipped, unless ``PPRUNNER_REQUIRE_TMUX=1`` (set by CI) makes
that a failure.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import attrs
import pytest

from pprunner import App, ExitCode, Status
from pprunner.invocation import ErrorInfo, RunnerInfo, RunnerKind
from pprunner.plugins import install_extra
from pprunner.snapshot import RATE_WINDOW, look
from pprunner.testing import make_invocation
from pprunner_plugins.memory import MemoryBackend
from tests import apps
from tests.conftest import REPO, cli_env, run_cli, start_supervisor, wait_until
from tests.redis_server import PrivateRedis, free_port, skip_or_fail

#: the screen's size: wide enough for every column of the workers' table
COLUMNS, LINES = 220, 50
#: how long a screen may take to show what a test waits for
SCREEN_TIMEOUT = 30.0
TOP = ("top", "--app", "tests.apps:app")


# -- what a look at the store sees ---------------------------------------------------


def test_a_look_tells_each_runner_s_state_from_its_phase_and_what_it_holds() -> None:
    backend = MemoryBackend("memory://")
    pid = os.getpid()  # alive, on this host

    def runner(runner_id: str, slot: int, phase: str = "serving") -> RunnerInfo:
        kind = RunnerKind.SUPERVISOR if slot == 0 else RunnerKind.WORKER
        return RunnerInfo(id=runner_id, kind=kind, pid=pid, supervisor="sup", slot=slot,
                          started_at=float(slot), phase=phase if slot else "")

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    backend.record_heartbeats(
        [runner("sup", 0), runner("booting", 1, "booting"), runner("busy", 2),
         runner("waiting", 3), runner("idle", 4), runner("retiring", 5, "retiring"),
         attrs.evolve(runner("lost", 6), pid=gone.pid)], at=time.time())
    for runner_id in ("busy", "waiting", "retiring"):
        backend.enqueue(make_invocation(task=f"{runner_id}.task"))
        assert backend.claim(runner_id, 0) is not None
    [parent] = backend.owned_by(["waiting"])
    backend.pause(parent.id, "waiting", ["someone"])
    backend.enqueue(child := make_invocation(task="nested.child"))
    assert backend.claim("busy", 0) is not None  # the busy worker also holds a nested child

    snapshot = look(backend, dead_after=30)
    states = {v.runner.id: v.state for v in snapshot.runners}
    assert states == {"sup": "alive", "booting": "booting", "busy": "busy",
                      "waiting": "waiting", "idle": "idle", "retiring": "retiring",
                      "lost": "LOST"}
    by_id = {v.runner.id: v for v in snapshot.runners}
    assert by_id["busy"].current == backend.get(child.id)  # the innermost one
    assert by_id["waiting"].current == backend.get(parent.id)
    assert by_id["idle"].current is None
    assert by_id["lost"].lost_because == f"pid {gone.pid} is gone"
    assert [v.runner.id for v in snapshot.workers] == [
        "booting", "busy", "waiting", "idle", "retiring", "lost"]
    # status reads no more than it shows; top also reads memory, rates and failures
    assert (by_id["busy"].memory, snapshot.ended, snapshot.failures) == (None, {}, ())
    detailed = {v.runner.id: v for v in look(backend, dead_after=30, recent_failures=5).runners}
    assert detailed["busy"].memory is not None and detailed["busy"].memory > 0
    assert detailed["lost"].memory is None


def test_a_look_counts_the_last_minute_s_endings_and_lists_the_latest_failures() -> None:
    backend = MemoryBackend("memory://")
    now = time.time()
    for number, (status, finished_at) in enumerate(
            [(Status.SUCCESS, now - 1), (Status.SUCCESS, now - 2), (Status.FAILED, now - 3),
             (Status.SUCCESS, now - RATE_WINDOW - 5), (Status.FAILED, now - RATE_WINDOW - 9)]):
        error = ErrorInfo("ValueError", f"number {number}") if status is Status.FAILED else None
        backend.enqueue(make_invocation())
        claimed = backend.claim("w", 0)
        assert claimed is not None
        backend._invocations[claimed.id] = attrs.evolve(  # ended at a chosen time
            claimed, status=status, finished_at=finished_at, error=error)
    snapshot = look(backend, dead_after=30, recent_failures=1)
    assert snapshot.ended == {Status.SUCCESS: 2, Status.FAILED: 1}
    assert snapshot.rate(Status.SUCCESS) == pytest.approx(2 / RATE_WINDOW)
    assert [i.error for i in snapshot.failures] == [ErrorInfo("ValueError", "number 2")]


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "code", "message"), [
    ("nosuch://x", ExitCode.CONFIG_ERROR, "pprunner: error: unknown backend 'nosuch://x'"),
    ("redis://127.0.0.1:{port}/0", ExitCode.BACKEND_ERROR,
     "pprunner: error: cannot reach Redis at redis://127.0.0.1:{port}/0"),
], ids=["unknown-scheme", "unreachable-redis"])
def test_a_store_top_cannot_read_is_one_line_and_an_exit_code(
        db_url: str, backend: str, code: ExitCode, message: str) -> None:
    port = str(free_port())  # nothing listens there
    backend, message = backend.replace("{port}", port), message.replace("{port}", port)
    for command in (TOP, ("status", "--app", "tests.apps:app", "--watch")):
        done = run_cli(*command, "--backend", backend, env=cli_env(db_url))
        assert (done.returncode, done.stdout) == (code, "")
        assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr


def test_without_textual_top_on_a_terminal_names_the_extra_in_one_line(
        app: App, db_url: str) -> None:
    """Textual hidden from the import system; stdout a real terminal (a pty)."""
    app.backend.counts()  # the store exists: top does not create one
    hide = ("import sys; sys.modules['textual'] = None; from pprunner.cli import main; "
            "sys.exit(main())")
    ours, theirs = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", hide, *TOP], cwd=REPO,
                              env=cli_env(db_url), stdout=theirs, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(theirs)
        os.close(ours)
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert done.stderr == ("pprunner: error: pprunner top needs Textual to draw on a "
                           f"terminal: {install_extra('top')} (piped or with --once, it "
                           "prints plain text without it)\n")


# -- plain text, when the output is not a terminal ------------------------------------


@pytest.mark.slow
def test_piped_top_prints_plain_text_every_interval_and_ends_0_on_sigint(
        app: App, db_url: str, cli_process) -> None:
    supervisor = start_supervisor(cli_process, db_url, app, workers=2)
    workers = serving_workers(app, 2)
    top = cli_process(*TOP, "--interval", "0.1", env=cli_env(db_url))
    text = read_until(top, top.stdout, lambda seen: seen.count("pprunner top: tests, ") >= 3)
    first = text.split("\n\n")[0].splitlines()
    assert first[1:3] == ["queue: pending 0, running 0, paused 0, success 0, failed 0",
                          "last 60 s: 0.00 succeeded/s, 0.00 failed/s"]
    assert supervisor_row(app, supervisor.pid) in [line.split()[:4] for line in first]
    for worker in workers:
        assert any(line.split()[:4] == [str(worker.slot), str(worker.pid), worker.host, "idle"]
                   for line in first), first
    top.send_signal(signal.SIGINT)
    assert top.wait(timeout=30) == ExitCode.OK
    assert top.stderr is not None and top.stderr.read() == ""


@pytest.mark.slow
@pytest.mark.redis
def test_a_store_lost_while_top_runs_is_a_line_per_refresh_until_it_is_back(
        tmp_path: Path, cli_process) -> None:
    """A Redis of the test's own, stopped and started again under a piped top."""
    if shutil.which("redis-server") is None:
        skip_or_fail("no redis-server binary on PATH: this test stops and starts its own")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        url = f"{server.url}?prefix=top"
        top = cli_process(*TOP, "--backend", url, "--interval", "0.2",
                          env=cli_env(url, PPRUNNER_OUTAGE_TIMEOUT="0.5"))
        read_until(top, top.stdout, lambda seen: "queue: pending 0" in seen)
        server.stop()
        said = "pprunner top: cannot read the store: "
        stderr = read_until(top, top.stderr, lambda seen: said in seen)
        # the backend's own warning comes first, then top's line for the refresh
        assert f"Redis at {url} is unreachable" in stderr.splitlines()[0]
        (lost,) = [line for line in stderr.splitlines() if said in line]
        assert lost.startswith(f"{said}Redis at {url} has been unreachable for "), lost
        server.start()
        back = read_until(top, top.stdout, lambda seen: "queue: pending 0" in seen)
        assert "pprunner top: tests, " in back  # a whole refresh again
        top.send_signal(signal.SIGINT)
        assert top.wait(timeout=30) == ExitCode.OK
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("options", "refreshes"), [
    (("--once",), 1), (("--iterations", "3", "--interval", "0.01"), 3)])
def test_top_prints_as_many_refreshes_as_asked_and_exits_0(
        app: App, db_url: str, supervise, options: tuple[str, ...], refreshes: int) -> None:
    supervise(processes=1)
    apps.add.enqueue(1, 2).result(timeout=30)
    done = run_cli(*TOP, *options, env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.count("pprunner top: tests, ") == refreshes
    assert done.stdout.count("queue: pending 0, running 0, paused 0, success 1, failed 0\n") \
        == refreshes


# -- the screen, in a real terminal ---------------------------------------------------


@attrs.define
class Tmux:
    """A tmux server of the test's own (``-L``), with one session of a fixed size."""

    folder: Path
    socket: str = attrs.Factory(lambda: f"pprunner-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              env=env, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    def start(self, *args: str, env: dict[str, str]) -> None:
        """Run ``pprunner ARGS`` in the session; once it ends, ``sh`` records its exit
        status and the terminal's modes. The new server takes ``env`` as its own."""
        command = shlex.join([sys.executable, "-m", "pprunner", *args])
        rc, modes = shlex.quote(str(self.folder / "rc")), shlex.quote(str(self.folder / "stty"))
        self._tmux("new-session", "-d", "-x", str(COLUMNS), "-y", str(LINES), "-c", str(REPO),
                   f"{command}; echo $? > {rc}.part; stty -a > {modes}; mv {rc}.part {rc}",
                   env=env)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def wait_for(self, shows: Callable[[str], bool]) -> str:
        """Read the screen until ``shows`` accepts it; fail with the last one seen."""
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:
            screen = self.screen()
            if shows(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the screen did not show it within {SCREEN_TIMEOUT} s:\n{screen}")
            time.sleep(0.1)

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def exit_status(self) -> tuple[int, set[str]]:
        """The command's exit status once it ended, and the terminal modes it left."""
        rc = self.folder / "rc"
        wait_until(rc.exists, timeout=SCREEN_TIMEOUT, what="pprunner top to exit")
        return int(rc.read_text()), set((self.folder / "stty").read_text().split())

    def kill(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._tmux("kill-server")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    missing = ("tmux is not installed (apt-get install tmux)" if shutil.which("tmux") is None
               else None)
    try:
        import textual  # noqa: F401 - the screen needs it
    except ImportError:
        missing = missing or "Textual is not installed (pip install -e '.[top]')"
    if missing:
        if os.environ.get("PPRUNNER_REQUIRE_TMUX") == "1":
            pytest.fail(f"PPRUNNER_REQUIRE_TMUX is set but {missing}")
        pytest.skip(f"{missing}: the live view's terminal tests need it")
    server = Tmux(tmp_path)
    yield server
    server.kill()


def assert_restored(modes: set[str]) -> None:
    """The terminal is back in its usual modes: lines edited and echoed."""
    assert {"icanon", "echo"} <= modes and not {"-icanon", "-echo"} & modes, modes


@pytest.mark.slow
def test_the_screen_shows_what_runs_and_q_quits_with_0(
        app: App, db_url: str, cli_process, tmp_path: Path, tmux: Tmux) -> None:
    failed = apps.fail.enqueue("expected [bold]not markup[/bold]")
    supervisor = start_supervisor(cli_process, db_url, app, workers=2)
    wait_until(lambda: failed.status() == Status.FAILED, what="the failing task to fail")
    markers = [tmp_path / f"sleeper-{n}" for n in range(2)]
    sleepers = []
    for marker in markers:
        marker.mkdir()
        sleepers.append(apps.announce_then_sleep.enqueue(str(marker), 120))
    for marker in markers:
        wait_until((marker / "started").exists, what="both sleepers to start")
    for n in range(3):  # both workers are busy: these stay pending
        apps.add.enqueue(n, n)
    by_runner = {r.id: r for r in app.backend.runners()}
    running = {s.id: by_runner[s.invocation().owner or ""] for s in sleepers}
    assert {r.pid for r in running.values()} == {int((m / "started").read_text())
                                                 for m in markers}

    tmux.start(*TOP, "--interval", "0.2", env=cli_env(db_url))
    screen = tmux.wait_for(lambda s: all(i in s for i in running) and failed.id in s
                           and "queue: pending 3, running 2" in s)
    lines = screen.splitlines()
    assert "queue: pending 3, running 2, paused 0, success 0, failed 1" in screen
    assert "last 60 s: 0.00 succeeded/s, 0.02 failed/s" in screen  # 1 failure / 60 s
    assert supervisor_row(app, supervisor.pid) in [line.split()[:4] for line in lines], screen
    for invocation_id, worker in running.items():
        (row,) = [line.split() for line in lines if invocation_id in line]
        slot, pid, host, state, took, unit, memory, mib, task, shown_id, runner_id = row
        assert (slot, pid, host, state) == (str(worker.slot), str(worker.pid), worker.host,
                                            "busy")
        assert (task, shown_id, runner_id) == (apps.announce_then_sleep.name, invocation_id,
                                               worker.id)
        assert unit == "s" and 0 <= float(took) < 120 and mib == "MiB" and int(memory) > 0
    (failure,) = [line for line in lines if failed.id in line]
    assert failure.split()[4:6] == [apps.fail.name, failed.id]  # after "HH:MM:SS (N s ago)"
    assert failure.rstrip().endswith("ValueError: expected [bold]not markup[/bold]")

    tmux.send("q")
    code, modes = tmux.exit_status()
    assert code == ExitCode.OK
    assert_restored(modes)


@pytest.mark.slow
def test_status_watch_is_the_same_screen_and_ctrl_c_quits_with_0(
        app: App, db_url: str, cli_process, tmux: Tmux) -> None:
    start_supervisor(cli_process, db_url, app, workers=1)
    [worker] = serving_workers(app, 1)
    tmux.start("status", "--app", "tests.apps:app", "--watch", "0.2", env=cli_env(db_url))
    screen = tmux.wait_for(lambda s: worker.id in s)
    (row,) = [line.split() for line in screen.splitlines() if worker.id in line]
    assert row[:4] == [str(worker.slot), str(worker.pid), worker.host, "idle"]
    assert row[-1] == worker.id and "workers: 1, 0 busy" in screen
    tmux.send("C-c")
    code, modes = tmux.exit_status()
    assert code == ExitCode.OK
    assert_restored(modes)


# -- helpers ---------------------------------------------------------------------------


def serving_workers(app: App, count: int) -> list[RunnerInfo]:
    """The store's workers once ``count`` of them have booted (until then: ``booting``)."""
    def serving() -> list[RunnerInfo]:
        workers = [r for r in app.backend.runners() if r.kind is RunnerKind.WORKER]
        return workers if [r.phase for r in workers] == ["serving"] * count else []

    return wait_until(serving, what=f"{count} worker(s) to boot")  # type: ignore[no-any-return]


def supervisor_row(app: App, pid: int) -> list[str]:
    """The first cells of the row of the store's one supervisor, which runs as ``pid``."""
    (supervisor,) = [r for r in app.backend.runners() if r.kind is RunnerKind.SUPERVISOR]
    assert supervisor.pid == pid
    return [supervisor.id, supervisor.host, str(pid), "alive"]


def read_until(process: subprocess.Popen[str], stream: IO[str] | None,
               done: Callable[[str], bool]) -> str:
    """What ``process`` printed on ``stream``, read line by line until ``done`` accepts
    it (bounded)."""
    assert stream is not None
    deadline = time.monotonic() + SCREEN_TIMEOUT
    seen = ""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                pytest.fail(f"not printed within {SCREEN_TIMEOUT} s:\n{seen}")
            if selector.select(left):
                seen += stream.readline()
    return seen
