"""The ``pprunner`` command: runs, signals, bad input, inspection."""

from __future__ import annotations

import argparse
import json
import os
import re
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
import pprunner.plugins
import pprunner.task
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


@pytest.mark.parametrize(("processes", "progress"), [("2", ["burst: 2/2 done"]), ("0", [])])
def test_the_burst_summary_counts_this_run_and_agrees_with_the_progress(
        app: App, db_url: str, processes: str, progress: list[str]) -> None:
    burst = (*RUN, "--processes", processes, "--burst")
    for n in range(3):
        apps.add.enqueue(n, n)
    assert run_cli(*burst, env=cli_env(db_url)).returncode == ExitCode.OK
    apps.add.enqueue(1, 1)
    apps.fail.enqueue("expected")
    second = run_cli(*burst, env=cli_env(db_url))
    assert second.returncode == ExitCode.OK, second.stderr
    assert second.stdout.splitlines() == [
        "burst done: 2 invocation(s) ended in this run: success 1, failed 1",
        "the store holds: pending 0, running 0, paused 0, success 4, failed 1"]
    # without a terminal the progress is logged (not inline); its last line counts the same
    logged = [line for line in second.stderr.splitlines() if " pprunner.progress: " in line]
    assert [line.partition(" pprunner.progress: ")[2][:len("burst: 2/2 done")]
            for line in logged[-1:]] == progress


@pytest.mark.parametrize(("app_path", "environment", "code", "message"), [
    ("tests.apps_fail_in_worker:app", {}, ExitCode.APP_LOAD_ERROR, "could not load the app"),
    ("tests.apps_broken_boot:app", {"PPRUNNER_TEST_BOOT": "exit",
                                    "PPRUNNER_CRASH_LOOP_PERIOD": "1"},
     ExitCode.CRASH_LOOP, "no worker could be kept running"),
])
def test_a_burst_whose_workers_cannot_start_fails_even_with_an_empty_queue(
        db_url: str, app_path: str, environment: dict[str, str], code: ExitCode,
        message: str) -> None:
    done = run_cli("run", "--app", app_path, "--processes", "2", "--burst",
                   env=cli_env(db_url, **environment))
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "burst done" not in done.stdout


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
    _, stderr = busy.supervisor.communicate(timeout=10)
    assert "was killed by SIGKILL from the supervisor: stopping at once" in stderr
    assert "perhaps out of memory" not in stderr  # it sent that SIGKILL itself
    invocation = busy.handle.invocation()
    assert (invocation.status, invocation.owner, invocation.attempts) == (Status.PENDING, None, 0)


@pytest.mark.parametrize("busy", [120], indirect=True)
def test_workers_do_not_outlive_a_sigkilled_supervisor(busy: Busy) -> None:
    busy.supervisor.kill()
    busy.supervisor.wait(timeout=10)
    assert_all_gone(busy.family)
    # the busy worker handed its invocation back on the way out
    assert busy.handle.status() == Status.PENDING


#: the start of every line pprunner logs (pprunner.log.FORMAT)
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ +\[\w+ pid=\d+ inv=\S+\] pprunner\.")


def test_a_sigkilled_supervisor_s_processes_end_in_pprunner_s_log_format(
        app: App, db_url: str, cli_process) -> None:
    """Each worker logs that the supervisor is gone, formatted; no semaphore is left
    for multiprocessing's resource tracker."""
    supervisor = start_supervisor(cli_process, db_url, app, workers=2)
    family = children_of(supervisor.pid)
    supervisor.kill()
    _, stderr = supervisor.communicate(timeout=30)  # its children share the pipe: all ended
    assert_all_gone(family)
    lines = stderr.splitlines()
    assert [line for line in lines if not LOG_LINE.match(line)] == []
    gone = [line for line in lines if line.endswith("the supervisor is gone; stopping")]
    assert len(gone) == 2, stderr  # the two workers: the supervisor has no helper process
    assert "leaked semaphore" not in stderr


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
    (("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--wait", "-1"), {},
     ExitCode.USAGE_ERROR, "argument --wait: expected 0 or more seconds, got '-1'"),
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


@pytest.mark.parametrize(("args", "error"), [
    (("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--no-such-flag"),
     "pprunner enqueue: error: unrecognized arguments: --no-such-flag"),
    (("enqueue", "--app", "tests.apps:app", "os.system"),
     "pprunner enqueue: error: unknown task 'os.system'"),
    (("retry", "--app", "tests.apps:app"), "pprunner retry: error: give invocation ids or --all"),
    (("status",), "pprunner status: error: --app MODULE:ATTRIBUTE is required"),
])
def test_a_command_s_usage_error_shows_that_command_s_usage(
        db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: tuple[str, ...], error: str) -> None:
    monkeypatch.setenv("PPRUNNER_BACKEND", db_url)
    monkeypatch.delenv("PPRUNNER_APP", raising=False)
    with pytest.raises(SystemExit) as exited:
        pprunner.cli.main(args)
    assert exited.value.code == ExitCode.USAGE_ERROR
    usage, *_, last = capsys.readouterr().err.splitlines()
    assert usage.startswith(f"usage: pprunner {args[0]} [-h]")
    assert last.startswith(error)


def test_a_command_loads_the_plugins_once(app: App, db_url: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's plugin manager, built for the plugins' options, is the app's
    too: a second one would scan the installed distributions and load every plugin again."""
    app.backend.counts()  # the store exists: status only opens one
    built: list[pprunner.plugins.Plugins] = []

    def counted() -> pprunner.plugins.Plugins:
        built.append(pprunner.plugins.get_plugin_manager())
        return built[-1]

    monkeypatch.setattr(pprunner.cli, "get_plugin_manager", counted)
    monkeypatch.setattr(pprunner.task, "get_plugin_manager", counted)
    monkeypatch.setattr(app, "_plugins", None)  # as in a fresh process
    monkeypatch.setattr(app, "_backend", None)
    monkeypatch.setenv("PPRUNNER_BACKEND", db_url)
    assert pprunner.cli.main(["status", "--app", "tests.apps:app"]) == 0
    assert len(built) == 1 and app.plugins is built[0]
    app.close()  # the backend the command opened, before the fixture's is put back


def test_every_option_of_every_command_has_help() -> None:
    parser = pprunner.cli.build_parser(pprunner.plugins.get_plugin_manager())
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.option_strings or action.dest}"
               for name, command in commands.choices.items() for action in command._actions
               if action.option_strings and not action.help]
    assert missing == []


@pytest.mark.parametrize("command", [("status",), ("show", "x"), ("failed",), ("retry", "--all"),
                                     ("purge", "--older-than", "0"), ("scale", "1"), ("top",),
                                     ("status", "--watch")])
def test_commands_that_only_read_never_create_a_store(tmp_path: Path,
                                                      command: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path}/nonexistent_dir/x/jobs.db"
    done = run_cli(*command, "--app", "tests.apps:app", "--backend", url, env=cli_env(url))
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert done.stderr == (f"pprunner: error: no SQLite database at {tmp_path}/nonexistent_dir/"
                           f"x/jobs.db (backend {url!r}); check the path: this command does "
                           "not create one\n")
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_with_two_slashes_is_a_config_error_with_a_hint(db_url: str) -> None:
    done = run_cli("status", "--app", "tests.apps:app", "--backend", "sqlite://jobs.db",
                   env=cli_env(db_url))
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert done.stderr == ("pprunner: error: bad SQLite URL 'sqlite://jobs.db': expected "
                           "sqlite:///relative/path.db or sqlite:////absolute/path.db (did you "
                           "mean sqlite:///jobs.db?)\n")


SCRIPT = """
import sys

from pprunner import App

app = App()


@app.task
def noop(n):
    return n + 1


if __name__ == "__main__":
    try:
        handle = noop.enqueue(41)
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
    print(handle.id, handle.invocation().task)
"""


def test_a_task_enqueued_from_a_script_run_as_a_file_is_named_as_workers_import_it(
        app: App, db_url: str, tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import REPO

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "bench.py").write_text(SCRIPT)
    enqueued = subprocess.run([sys.executable, "bench.py"], cwd=scripts, env=cli_env(db_url),
                              capture_output=True, text=True, timeout=60)
    assert enqueued.returncode == 0, enqueued.stderr
    invocation_id, task = enqueued.stdout.split()
    assert task == "bench.noop"
    # a supervisor that imports the file as the module `bench` runs it
    done = run_cli("run", "--app", "bench:app", "--processes", "1", "--burst",
                   env=cli_env(db_url, PYTHONPATH=f"{scripts}{os.pathsep}{REPO}"))
    assert done.returncode == ExitCode.OK, done.stderr
    assert app.handle(invocation_id).status() == Status.SUCCESS


def test_a_task_in_a_script_no_worker_can_import_is_refused_at_enqueue(
        app: App, db_url: str, tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "my-bench.py").write_text(SCRIPT)  # not a module name: nothing imports it
    enqueued = subprocess.run([sys.executable, "my-bench.py"], cwd=tmp_path,
                              env=cli_env(db_url), capture_output=True, text=True, timeout=60)
    assert enqueued.returncode == 1
    assert enqueued.stderr == (
        "AppLoadError: task '__main__.noop' is defined in a script run as __main__ that is not "
        "importable under a module name, so no worker could run it; define it in an importable "
        "module, or run the script with python -m (a file whose name is a valid module name, "
        "e.g. bench.py, not my-bench.py)\n")
    assert app.backend.counts()[Status.PENDING] == 0


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


def test_enqueue_and_wait_that_runs_out_exits_timeout(app: App, db_url: str) -> None:
    # no supervisor runs: the invocation cannot end within the wait
    done = run_cli("enqueue", "--app", "tests.apps:app", "tests.apps.add", "--args", "[1, 2]",
                   "--wait", "0.2", env=cli_env(db_url))
    assert done.returncode == ExitCode.TIMEOUT == 124
    invocation_id = done.stdout.strip()
    assert done.stderr == (f"pprunner: error: invocation {invocation_id} is still PENDING "
                           "after 0.2 s\n")
    assert app.handle(invocation_id).status() == Status.PENDING


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
    # each worker's phase as its supervisor last saw it: serving, once it has booted
    wait_until(lambda: sorted(r.phase for r in app.backend.runners()) == ["", "serving",
                                                                         "serving"])
    report = json.loads(run_cli("status", "--app", "tests.apps:app", "--json",
                                env=cli_env(db_url)).stdout)
    assert {r["kind"]: r["phase"] for r in report["runners"]} == {"supervisor": "",
                                                                 "worker": "serving"}


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
    (line,) = done.stderr.splitlines()  # one line, its age as old as the CLI's start-up
    assert re.fullmatch(rf"pprunner: error: supervisor ghost \(pid {os.getpid()}\) is not "
                        r"running any more \(last heartbeat \d+ s ago\)", line), line


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
    app.backend.counts()  # the store exists: status only reads one
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


@pytest.mark.parametrize("args", [("plugins",), ("plugins", "--json"),
                                  ("health", "--file", "/nonexistent/health.json")])
def test_a_reader_that_goes_away_ends_a_command_quietly(db_url: str, args: tuple[str, ...]) -> None:
    import subprocess

    from tests.conftest import REPO

    reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "pprunner", *args], cwd=REPO,
                               env=cli_env(db_url), stdout=writer, stderr=subprocess.PIPE,
                               text=True)
    os.close(writer)
    os.close(reader)  # as `| head` does once it has what it wants: every write now fails
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (ExitCode.BROKEN_PIPE, "")


def test_the_redis_example_without_the_redis_extra_says_which_to_install(
        db_url: str, tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import REPO

    # a `redis` that cannot be imported, first on the path: as if the extra were missing
    (tmp_path / "redis.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'redis'\", name='redis')\n")
    done = subprocess.run([sys.executable, "-m", "examples.redis_hosts"], cwd=REPO,
                          env=cli_env(db_url, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("examples.redis_hosts needs the redis extra: pip install -e "
                           "'.[redis]'\n")
