"""The ``pprunner`` command: runs, signals, bad input, inspection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import pprunner
import pprunner.backend
import pprunner.cli
from pprunner import App, ErrorInfo, ExitCode, RunnerInfo, Status
from pprunner.invocation import RunnerKind
from pprunner.testing import make_invocation
from tests import apps
from tests.conftest import (
    RUN,
    Busy,
    assert_all_gone,
    children_of,
    cli_env,
    live_workers,
    run_cli,
    start_supervisor,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_burst_drains_the_queue_and_exits_zero(app: App, db_url: str) -> None:
    handles = [apps.add.enqueue(n, n) for n in range(50)]
    handles.append(apps.fail.enqueue("expected"))
    done = run_cli(*RUN, "--processes", "2", "--burst", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert "success 50, failed 1" in done.stdout
    assert [h.result(timeout=1) for h in handles[:-1]] == [2 * n for n in range(50)]
    failed = handles[-1].id
    # log lines name the runner, the pid and the invocation
    line = next(line for line in done.stderr.splitlines() if f"inv={failed}" in line)
    assert "ValueError: expected" in line and " pid=" in line


def test_inline_burst_runs_in_the_supervisor_process(app: App, db_url: str) -> None:
    handle = apps.whoami.enqueue()
    done = run_cli(*RUN, "--inline", "--burst", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert "running inline" in done.stderr
    assert handle.result(timeout=1)["slot"] == 0


@pytest.mark.parametrize("busy", [0.5], indirect=True)
def test_sigterm_lets_running_work_finish_and_leaves_nothing_behind(app: App, busy: Busy) -> None:
    busy.supervisor.send_signal(signal.SIGTERM)
    assert busy.supervisor.wait(timeout=30) == ExitCode.OK
    assert busy.handle.status() == Status.SUCCESS
    assert_all_gone(busy.family)
    assert app.backend.counts()[Status.RUNNING] == 0
    assert app.backend.runners() == []


@pytest.mark.parametrize("busy", [120], indirect=True)
def test_second_sigint_stops_at_once_and_hands_work_back(app: App, busy: Busy) -> None:
    busy.supervisor.send_signal(signal.SIGINT)
    # the idle worker leaves at once on the first SIGINT: proof it was handled
    wait_until(lambda: live_workers(app) == 1, what="the idle worker to stop")
    busy.supervisor.send_signal(signal.SIGINT)
    assert busy.supervisor.wait(timeout=30) == ExitCode.INTERRUPTED
    assert_all_gone(busy.family)
    invocation = busy.handle.invocation()
    assert (invocation.status, invocation.owner, invocation.attempts) == (Status.PENDING, None, 0)


@pytest.mark.parametrize("busy", [120], indirect=True)
def test_workers_do_not_outlive_a_sigkilled_supervisor(busy: Busy) -> None:
    busy.supervisor.kill()
    busy.supervisor.wait(timeout=10)
    assert_all_gone(busy.family)
    # the busy worker handed its invocation back on the way out
    assert busy.handle.status() == Status.PENDING


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the manager's abstract socket is Linux-only")
def test_a_sigkilled_supervisor_leaves_no_multiprocessing_folder(
        app: App, db_url: str, cli_process) -> None:
    def folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("pymp-*"))

    before = folders()
    supervisor = start_supervisor(cli_process, db_url, app, workers=1)
    family = children_of(supervisor.pid)
    supervisor.kill()
    supervisor.wait(timeout=10)
    assert_all_gone(family)
    assert folders() - before == set()


@pytest.mark.parametrize(("args", "environment", "code", "message"), [
    (("run", "--app", "no_such_module:app"), {}, ExitCode.APP_LOAD_ERROR,
     "cannot import app 'no_such_module:app': ModuleNotFoundError"),
    (("run", "--app", "tests.apps:nothing"), {}, ExitCode.APP_LOAD_ERROR,
     "module 'tests.apps' has no attribute 'nothing'"),
    ((*RUN, "--backend", "bogus://x"), {}, ExitCode.CONFIG_ERROR,
     "unknown backend 'bogus://x'"),
    ((*RUN, "--serializer", "yaml"), {}, ExitCode.CONFIG_ERROR, "unknown serializer 'yaml'"),
    (RUN, {"PPRUNNER_SHUTDOWN_TIMEOUT": "soon"}, ExitCode.CONFIG_ERROR,
     "setting 'shutdown_timeout' from environment PPRUNNER_SHUTDOWN_TIMEOUT: expected a number"),
    ((*RUN, "--processes", "-1"), {}, ExitCode.CONFIG_ERROR, "setting 'processes'"),
    ((*RUN, "--backend", "sqlite:////proc/no/such/dir/jobs.db"), {}, ExitCode.BACKEND_ERROR,
     "cannot open SQLite database"),
    ((*RUN, "--no-such-flag"), {}, ExitCode.USAGE_ERROR, "unrecognized arguments"),
    (("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--args", "{nope"), {},
     ExitCode.USAGE_ERROR, "not valid JSON"),
    (("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--args", '{"x": 1}'), {},
     ExitCode.USAGE_ERROR, "expected a JSON list"),
    (("enqueue", "--app", "tests.apps:app", "os.system"), {}, ExitCode.USAGE_ERROR,
     "unknown task 'os.system'"),
    (("status",), {}, ExitCode.USAGE_ERROR, "--app MODULE:ATTRIBUTE is required"),
    (("run", "--app", "tests.apps_fail_in_worker:app", "--processes", "1"), {},
     ExitCode.APP_LOAD_ERROR, "could not load the app"),
    (("purge", "--app", "tests.apps:app", "--older-than", "3w"), {}, ExitCode.USAGE_ERROR,
     "unknown duration unit 'w' in '3w'; use s, m, h or d"),
    (("purge", "--app", "tests.apps:app"), {"PPRUNNER_KEEP_FINISHED": "0"},
     ExitCode.USAGE_ERROR, "keep_finished is 0 (keep every invocation); give --older-than"),
    (("run", "--app", "tests.apps:app"), {"PPRUNNER_KEEP_FINISHED": "a week"},
     ExitCode.CONFIG_ERROR, "unknown duration unit 'a week'"),
])
def test_bad_input_is_one_clear_line_and_a_documented_exit_code(
        db_url: str, args: tuple[str, ...], environment: dict[str, str], code: ExitCode,
        message: str) -> None:
    done = run_cli(*args, env=cli_env(db_url, **environment))
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_enqueue_and_wait_prints_the_id_and_the_result(app: App, db_url: str, supervise) -> None:
    supervise(processes=1)
    done = run_cli("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--args", "[1, 2]",
                   "--wait", "30", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    invocation_id, result = done.stdout.split()
    assert app.handle(invocation_id).status() == Status.SUCCESS
    assert json.loads(result) == 3


def test_enqueue_and_wait_for_a_failing_task_exits_task_failed(
        app: App, db_url: str, supervise) -> None:
    supervise(processes=1)
    done = run_cli("enqueue", "--app", "tests.apps:app", "tests.apps.fail", "--kwargs",
                   '{"message": "no"}', "--wait", "30", env=cli_env(db_url))
    assert done.returncode == ExitCode.TASK_FAILED
    assert "ValueError: no" in done.stderr


def test_purge_deletes_what_finished_before_the_cutoff(app: App, db_url: str) -> None:
    backend = app.backend
    ids = []
    for _ in range(3):
        backend.enqueue(invocation := make_invocation())
        assert backend.claim("r", 0.05) is not None
        ids.append(invocation.id)
    backend.complete(ids[0], "r", b"1")
    backend.fail(ids[1], "r", ErrorInfo("E", "no"))  # and the third one is still RUNNING
    kept = run_cli("purge", "--app", "tests.apps:app", env=cli_env(db_url))  # keep_finished 1 d
    assert kept.returncode == ExitCode.OK and kept.stdout.startswith("deleted 0 invocation(s)")
    done = run_cli("purge", "--app", "tests.apps:app", "--older-than", "0", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.startswith("deleted 2 invocation(s) that finished before ")
    assert backend.counts() == {**dict.fromkeys(Status, 0), Status.RUNNING: 1}


def test_a_long_purge_shows_its_progress(app: App, db_url: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pprunner.backend, "PURGE_BATCH", 1)  # a batch per invocation
    monkeypatch.setattr(pprunner.cli, "PURGE_PROGRESS_EVERY", 0)  # a line per batch
    monkeypatch.setenv("PPRUNNER_BACKEND", db_url)
    for _ in range(3):
        app.backend.enqueue(invocation := make_invocation())
        assert app.backend.claim("r", 0.05) is not None
        app.backend.complete(invocation.id, "r", b"1")
    assert pprunner.cli.main(["purge", "--app", "tests.apps:app", "--older-than", "0"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"purge: {n} deleted so far" for n in (1, 2, 3)]
    assert out.startswith("deleted 3 invocation(s)")


def test_status_shows_runners_and_counts(app: App, db_url: str, supervise) -> None:
    supervisor = supervise(processes=2)
    apps.add.enqueue(1, 1).result(timeout=30)
    done = run_cli("status", "--app", "tests.apps:app", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert supervisor.id in done.stdout
    assert done.stdout.count(" worker ") == 2
    assert "success 1" in done.stdout
    report = json.loads(run_cli("status", "--app", "tests.apps:app", "--json",
                                env=cli_env(db_url)).stdout)
    assert report["counts"]["SUCCESS"] == 1
    assert {r["kind"] for r in report["runners"]} == {"supervisor", "worker"}
    assert all(r["heartbeat_age"] < 30 for r in report["runners"])


def a_gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


def status_of(db_url: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """``pprunner status``'s table, and its runners from ``--json`` by id."""
    table = run_cli("status", "--app", "tests.apps:app", env=cli_env(db_url))
    assert table.returncode == ExitCode.OK, table.stderr
    report = json.loads(run_cli("status", "--app", "tests.apps:app", "--json",
                                env=cli_env(db_url)).stdout)
    return table.stdout, {r["id"]: r for r in report["runners"]}


def test_status_marks_runners_lost_by_their_heartbeat_or_their_pid(
        app: App, db_url: str) -> None:
    now = time.time()
    silent = RunnerInfo(id="silent", kind=RunnerKind.SUPERVISOR, pid=1, host="elsewhere")
    fine = RunnerInfo(id="fine", kind=RunnerKind.SUPERVISOR, pid=1, host="elsewhere")
    gone = RunnerInfo(id="gone", kind=RunnerKind.WORKER, pid=a_gone_pid(), slot=1)
    app.backend.record_heartbeats([silent], at=now - 100)  # dead_after is 30 s
    app.backend.record_heartbeats([fine, gone], at=now)
    table, runners = status_of(db_url)
    assert runners["fine"]["state"] == "alive" and runners["fine"]["lost_because"] is None
    assert runners["silent"]["state"] == "lost"
    assert runners["silent"]["lost_because"].startswith("no heartbeat for 10")
    assert runners["silent"]["lost_because"].endswith(" s (dead_after 30 s)")
    assert (runners["gone"]["state"], runners["gone"]["lost_because"]) == (
        "lost", f"pid {gone.pid} is gone")
    rows = {line.split()[0]: line for line in table.splitlines()[2:-1]}
    assert "runners: 3 (2 lost)" in table and " STATE " in table.splitlines()[1]
    assert " alive " in rows["fine"]
    assert f" LOST: pid {gone.pid} is gone " in rows["gone"]
    assert " LOST: no heartbeat for 10" in rows["silent"]


def test_status_and_scale_after_the_supervisor_was_sigkilled(
        app: App, db_url: str, cli_process) -> None:
    supervisor = start_supervisor(cli_process, db_url, app, workers=1)
    family = children_of(supervisor.pid)
    supervisor_id = next(r.id for r in app.backend.runners() if r.kind == "supervisor")
    supervisor.kill()
    supervisor.wait(timeout=10)
    assert_all_gone(family)
    table, runners = status_of(db_url)
    assert {r["state"] for r in runners.values()} == {"lost"}
    assert runners[supervisor_id]["lost_because"] == f"pid {supervisor.pid} is gone"
    assert f"LOST: pid {supervisor.pid} is gone" in table
    gone = (f"supervisor {supervisor_id} (pid {supervisor.pid}) is not running any more "
            "(last heartbeat ")
    named = run_cli("scale", "--app", "tests.apps:app", "3", "--supervisor", supervisor_id,
                    env=cli_env(db_url))
    assert named.returncode == ExitCode.USAGE_ERROR
    [line] = named.stderr.splitlines()
    assert line.startswith(f"pprunner: error: {gone}") and line.endswith(" s ago)")
    every = run_cli("scale", "--app", "tests.apps:app", "3", env=cli_env(db_url))
    assert every.returncode == ExitCode.USAGE_ERROR
    skipped, error = every.stderr.splitlines()
    assert skipped.startswith(f"pprunner: skipped: {gone}")
    assert error.startswith("pprunner: error: no running supervisor of this app on ")


def test_scale_skips_lost_supervisors_and_reaches_the_live_one(
        app: App, db_url: str, supervise) -> None:
    live = supervise(processes=1)
    lost = RunnerInfo(id="lost", kind=RunnerKind.SUPERVISOR, pid=a_gone_pid())
    app.backend.record_heartbeats([lost], at=time.time())
    done = run_cli("scale", "--app", "tests.apps:app", "2", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.splitlines() == [f"supervisor {live.id} (pid {os.getpid()}): "
                                        "scaling to 2"]
    assert done.stderr.startswith(f"pprunner: skipped: supervisor lost (pid {lost.pid}) is "
                                  "not running any more")
    wait_until(lambda: live_workers(app) == 2, what="the live supervisor to scale")


def test_scale_to_a_supervisor_that_died_since_its_heartbeat_is_one_line(
        app: App, db_url: str) -> None:
    # its pid is alive (this process) and its heartbeat fresh, but nobody listens
    ghost = RunnerInfo(id="ghost", kind=RunnerKind.SUPERVISOR, pid=os.getpid())
    app.backend.record_heartbeats([ghost], at=time.time())
    done = run_cli("scale", "--app", "tests.apps:app", "2", env=cli_env(db_url))
    assert done.returncode == ExitCode.USAGE_ERROR
    assert done.stderr.splitlines() == [
        f"pprunner: error: supervisor ghost (pid {os.getpid()}) is not running any more "
        "(last heartbeat 0 s ago)"]


def test_plugins_lists_plugins_backends_and_serializers(db_url: str) -> None:
    done = run_cli("plugins", env=cli_env(db_url))
    assert done.returncode == ExitCode.OK, done.stderr
    for expected in ("sqlite://", "memory://", "json", "pickle", "runs code on load",
                     f"pprunner {pprunner.__version__}"):
        assert expected in done.stdout
    blocked = run_cli("plugins", "--json", env=cli_env(db_url, PPRUNNER_DISABLED_PLUGINS="pickle"))
    assert "pickle" not in json.loads(blocked.stdout)["serializers"]


def test_version(db_url: str) -> None:
    done = run_cli("--version", env=cli_env(db_url))
    assert done.stdout.strip() == f"pprunner {pprunner.__version__}"


def test_pprunner_app_environment_variable_names_the_app(app: App, db_url: str) -> None:
    done = run_cli("status", env=cli_env(db_url, PPRUNNER_APP="tests.apps:app"))
    assert done.returncode == ExitCode.OK, done.stderr
    assert os.path.basename(db_url) not in done.stderr


def test_two_supervisors_share_one_database(app: App, db_url: str, cli_process) -> None:
    handles = [apps.add.enqueue(n, 1) for n in range(300)]
    env = cli_env(db_url)
    first, second = (cli_process(*RUN, "--processes", "2", "--burst", env=env) for _ in "ab")
    assert first.wait(timeout=60) == second.wait(timeout=60) == ExitCode.OK
    invocations = [h.invocation() for h in handles]
    assert [i.status for i in invocations] == [Status.SUCCESS] * 300
    assert {i.attempts for i in invocations} == {1}  # each ran exactly once
    assert [h.result(timeout=1) for h in handles] == list(range(1, 301))


def test_the_fan_out_example_runs(db_url: str) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "examples.fan_out", "4"], cwd=REPO,
                          env=cli_env(db_url), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("31 invocations in ")


def test_the_crash_recovery_example_runs(db_url: str) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "examples.crash_recovery"], cwd=REPO,
                          env=cli_env(db_url), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "result 42 after 2 attempts"
    assert done.stdout.splitlines()[1].startswith("attempt 1: WorkerDied: ")
