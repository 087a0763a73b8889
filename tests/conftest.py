"""Shared fixtures: a runtime folder of the run's own, a per-test SQLite backend,
supervisors that are always stopped, CLI processes that are always reaped, and
bounded waits."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import psutil
import pytest

import pprunner
from pprunner import App, Supervisor
from tests import apps
from tests.postgres_server import postgres_url  # noqa: F401 - a fixture for every test
from tests.redis_server import redis_base, redis_url  # noqa: F401 - fixtures for every test

REPO = Path(__file__).resolve().parent.parent
#: ``pprunner run`` for the tests' app
RUN = ("run", "--app", "tests.apps:app")


def kill_tree(process: subprocess.Popen[Any]) -> None:
    """SIGKILL a command the test started and every process under it, and reap them."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(process.pid)
        family = [root, *root.children(recursive=True)]
        for member in family:
            member.kill()
        psutil.wait_procs(family, timeout=10)
    process.wait(timeout=10)


def project_module(folder: Path, name: str) -> ModuleType:
    """Module ``name`` of a project folder, imported as the project's producers import it
    (from the folder, which is taken off ``sys.path`` again)."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@pytest.fixture(autouse=True, scope="session")
def private_runtime_folder() -> Iterator[Path]:
    """Every process of the run keeps its sockets in a folder of the run's own
    (``$XDG_RUNTIME_DIR``, inherited by the CLI processes it starts): supervisors
    prune the runtime folder when they start, and the suite must neither touch
    nor depend on what other runs, or a developer's own supervisors, left in the
    shared one. mkdtemp makes it 0700 and its path stays short, as socket paths
    must (108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="pprunner-run-"))
    before = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(folder)
    yield folder
    if before is None:
        del os.environ["XDG_RUNTIME_DIR"]
    else:
        os.environ["XDG_RUNTIME_DIR"] = before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.db"


@contextlib.contextmanager
def on_fresh_store(app: App, db_url: str) -> Iterator[App]:
    """``app`` on the database ``db_url``, with quick ticks; as it was afterwards."""
    app.configure(source="the test", replace=True, backend=db_url, heartbeat_interval=0.1,
                  shutdown_timeout=10)
    yield app
    app.close()
    app.configure(source="the test", replace=True)


@pytest.fixture
def app(db_url: str) -> Iterator[App]:
    """The tests' app (tests/apps.py) on a fresh database, with quick ticks (a test
    module may override it with another app: ``supervise`` then runs that one)."""
    from tests.apps import app

    with on_fresh_store(app, db_url):
        yield app


@pytest.fixture
def supervise(app: App) -> Iterator[Callable[..., Supervisor]]:
    """Start supervisors in the background; each is stopped at teardown."""
    started: list[Supervisor] = []

    def start(processes: int = 2, **options: Any) -> Supervisor:
        supervisor = Supervisor(app, processes=processes, **options).start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop(immediate=True, timeout=30)


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    # the tox matrix picks the app's default serializer through PPRUNNER_SERIALIZER
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PPRUNNER_") or k == "PPRUNNER_SERIALIZER"}
    env.update(PPRUNNER_BACKEND=db_url, PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str],
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pprunner", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``pprunner`` commands; every process and its children are killed at teardown."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-m", "pprunner", *args], cwd=REPO,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        reap(process)


def reap(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` and every process under it, and wait for them."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=10)
    process.communicate(timeout=10)


def children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def live_workers(app: App) -> int:
    return sum(r.kind == pprunner.invocation.RunnerKind.WORKER for r in app.backend.runners())


def start_supervisor(cli_process, db_url: str, app: App, *extra: str,
                     workers: int = 2) -> subprocess.Popen[str]:
    process = cli_process(*RUN, "--processes", str(workers), *extra,
                          env=cli_env(db_url, PPRUNNER_HEARTBEAT_INTERVAL="0.1"))
    wait_until(lambda: live_workers(app) == workers or process.poll() is not None,
               what="the workers to report")
    assert process.poll() is None, process.communicate()
    return process


@attrs.frozen
class Busy:
    """A CLI supervisor with one worker busy on a task, and all its child processes."""

    supervisor: subprocess.Popen[str]
    handle: pprunner.Handle
    family: list[psutil.Process]


@pytest.fixture
def busy(app: App, db_url: str, cli_process, marker_dir: Path, request) -> Busy:
    """Parametrise with the task's duration in seconds (indirect)."""
    supervisor = start_supervisor(cli_process, db_url, app)
    handle = apps.announce_then_sleep.enqueue(str(marker_dir), request.param)
    wait_until((marker_dir / "started").exists, what="the task to start")
    family = children_of(supervisor.pid)
    assert len(family) == 3  # two workers and the template they were forked from, no other
    return Busy(supervisor, handle, family)


def assert_all_gone(family: list[psutil.Process]) -> None:
    _gone, alive = psutil.wait_procs(family, timeout=5)
    assert alive == [], f"still alive after the supervisor stopped: {alive}"


@pytest.fixture
def new_executor() -> Iterator[Callable[..., Any]]:
    """Make executors (``pprunner.Executor`` unless ``cls`` says otherwise); each is
    shut down at teardown, its queued calls cancelled."""
    made: list[Any] = []

    def make(cls: Any = pprunner.Executor, **options: Any) -> Any:
        options.setdefault("max_workers", 2)
        executor = cls(**options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


class Gates:
    """Calls held until the test lets them go (``tests.executor_calls.hold``): each
    says it started with a marker file and waits for its release file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names: set[str] = set()

    def hold(self, executor: Any, name: str, value: Any = None) -> Any:
        """Submit a held call; returns its future."""
        from tests import executor_calls

        self.names.add(name)
        return executor.submit(executor_calls.hold, str(self.directory), name, value)

    def wait_started(self, *names: str) -> None:
        for name in names:
            wait_until((self.directory / f"{name}.started").exists, what=f"{name} to start")

    def pid(self, name: str) -> int:
        """The pid of the worker that runs (or ran) the held call ``name``."""
        self.wait_started(name)
        return int((self.directory / f"{name}.started").read_text())

    def release(self, *names: str) -> None:
        for name in names or tuple(self.names):
            (self.directory / f"{name}.release").touch()


@pytest.fixture
def gates(tmp_path: Path, new_executor: Callable[..., Any]) -> Iterator[Gates]:
    """Held calls, all released at teardown (before ``new_executor`` shuts down: a
    failed test must not leave a shutdown waiting for a call that waits)."""
    directory = tmp_path / "gates"
    directory.mkdir()
    gates = Gates(directory)
    yield gates
    gates.release()
