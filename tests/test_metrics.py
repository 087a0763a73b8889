"""The Prometheus metrics plugin: real supervisors and workers, scraped over HTTP.

Every check of a running supervisor polls its endpoint until the expected
numbers appear (bounded), then compares them with what ran.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pprunner import App, Executor, TaskFailed, config
from pprunner.errors import ConfigError
from pprunner.plugins import CORE, install_extra
from pprunner_plugins.prometheus import folder as metrics_folder
from pprunner_plugins.prometheus import tally
from tests import apps, executor_calls
from tests.conftest import REPO, RUN, cli_env, run_cli, wait_until
from tests.metrics_scrape import free_port, listening, scrape, scraped_until

pytestmark = pytest.mark.slow

DASHBOARD = REPO / "examples" / "grafana" / "pprunner.json"


@pytest.fixture
def port(app: App) -> int:
    """A free port, set as the app's metrics_port."""
    chosen = free_port()
    app.configure(source="the test", metrics_port=f"127.0.0.1:{chosen}")
    return chosen


# -- a supervisor in pull mode -------------------------------------------------------------


def test_the_counters_match_what_ran_and_the_gauges_what_runs(
        app: App, supervise, port: int, marker_dir: Path) -> None:
    supervise(processes=2)
    adds = [apps.add.enqueue(n, 1) for n in range(10)]
    fails = [apps.fail.enqueue("on purpose") for _ in range(2)]
    retried = apps.retries_once.enqueue()
    assert [h.result(timeout=30) for h in adds] == list(range(1, 11))
    for handle in fails:
        with pytest.raises(TaskFailed):
            handle.result(timeout=30)
    assert retried.result(timeout=30) == 2

    found = scraped_until(port, lambda m: m("pprunner_invocations_succeeded_total",
                                            task="tests.apps.add") == 10
                          and m("pprunner_invocations_failed_total", task="tests.apps.fail") == 2
                          and m("pprunner_invocations_succeeded_total",
                                task="tests.apps.retries_once") == 1
                          and m("pprunner_worker_boots_total") == 2,
                          "the outcomes of what ran, and both workers booted")
    started = {task: found("pprunner_invocations_started_total", task=f"tests.apps.{task}")
               for task in ("add", "fail", "retries_once")}
    assert started == {"add": 10, "fail": 2, "retries_once": 2}
    assert found("pprunner_invocations_retried_total", task="tests.apps.retries_once") == 1
    assert found.total("pprunner_invocations_rerouted_total") == 0
    assert found.total("pprunner_invocations_failed_total") == 2
    # each attempt that ended in a worker has its duration: 10 + 2 + 2
    assert found("pprunner_invocation_duration_seconds_count", task="tests.apps.add") == 10
    assert found.total("pprunner_invocation_duration_seconds_count") == 14
    assert found("pprunner_invocation_duration_seconds_bucket", task="tests.apps.add",
                 le="+Inf") == 10
    # enqueued counts what this supervisor's tasks enqueued: the test, a producer, did it all
    assert found.total("pprunner_invocations_enqueued_total") == 0
    assert found("pprunner_queue_invocations", status="success") == 11
    assert found("pprunner_queue_invocations", status="failed") == 2
    assert found("pprunner_queue_invocations", status="pending") == 0
    assert found("pprunner_workers_alive") == found("pprunner_workers_configured") == 2
    assert found("pprunner_worker_boots_total") == 2
    assert found("pprunner_worker_boot_seconds_count") == 2
    assert found.total("pprunner_worker_exits_total") == 0
    assert 0 <= found("pprunner_supervisor_heartbeat_age_seconds") < 5

    # a parent that waits (paused) for a child held on a marker file: one worker
    # busy, one paused, and the child was enqueued by a task of this supervisor's
    parent = apps.parent_of_held.enqueue(str(marker_dir))
    wait_until((marker_dir / "held.started").exists, what="the child to run")
    found = scraped_until(port, lambda m: m("pprunner_workers_paused") == 1,
                          "the waiting parent's worker to count as paused")
    assert found("pprunner_workers_busy") == 1
    assert found("pprunner_queue_invocations", status="running") == 1
    assert found("pprunner_queue_invocations", status="paused") == 1
    assert found("pprunner_invocations_enqueued_total", task="tests.apps.held") == 1
    (marker_dir / "held.release").write_text("")
    assert parent.result(timeout=30) == "released"
    found = scraped_until(port, lambda m: m("pprunner_workers_busy") == 0
                          and m("pprunner_workers_paused") == 0, "both workers to be idle")
    assert found("pprunner_invocations_succeeded_total", task="tests.apps.parent_of_held") == 1


def test_a_sigkilled_worker_is_counted_once_and_its_invocation_as_rerouted(
        app: App, supervise, port: int, marker_dir: Path) -> None:
    supervisor = supervise(processes=2)
    handle = apps.blocks_on_first_attempt.enqueue(str(marker_dir))
    first = marker_dir / "started-1"
    wait_until(first.exists, what="the first attempt to start")
    os.kill(int(first.read_text()), signal.SIGKILL)
    assert handle.result(timeout=30) == 2

    task = "tests.apps.blocks_on_first_attempt"
    found = scraped_until(port, lambda m: m("pprunner_worker_boots_total") == 3
                          and m("pprunner_invocations_succeeded_total", task=task) == 1,
                          "the replacement worker and the second attempt")
    assert found("pprunner_worker_exits_total", cause="signal", exit="SIGKILL") == 1
    assert found.total("pprunner_worker_exits_total") == 1
    assert found("pprunner_invocations_rerouted_total", task=task) == 1
    # the first attempt was counted by the worker that died: its file was folded in
    assert found("pprunner_invocations_started_total", task=task) == 2
    assert found.total("pprunner_invocations_failed_total") == 0
    assert found("pprunner_invocation_duration_seconds_count", task=task) == 1
    assert found("pprunner_workers_alive") == 2
    folder = tally.folder_of(supervisor.id)
    assert len(tally.files(folder)) == 3, "the supervisor's file and one per live worker"


def test_metrics_off_register_no_per_job_hook_and_on_only_the_workers_counter(
        app: App, supervise) -> None:
    plain = supervise(processes=1)
    assert apps.per_job_hook_owners.enqueue().result(timeout=30) == []
    for hook in ("pprunner_job_started", "pprunner_job_finished", "pprunner_enqueue"):
        assert [impl for impl in getattr(app.plugins.hook, hook).get_hookimpls()
                if impl.plugin_name != CORE] == []
    plain.stop()

    chosen = free_port()
    app.configure(source="the test", metrics_port=str(chosen))
    metered = supervise(processes=1)
    assert apps.per_job_hook_owners.enqueue().result(timeout=30) == ["WorkerMetrics"] * 3
    owners = {type(impl.plugin).__name__
              for impl in app.plugins.hook.pprunner_job_started.get_hookimpls()}
    assert owners == {"SupervisorMetrics"}
    folder = tally.folder_of(metered.id)
    assert folder.is_dir()
    metered.stop()
    assert app.plugins.hook.pprunner_job_started.get_hookimpls() == []
    assert not folder.exists()
    assert listening(chosen) is False


def test_the_dashboard_uses_only_metrics_the_plugin_exports(app: App, supervise,
                                                            port: int) -> None:
    supervise(processes=1)
    assert apps.add.enqueue(1, 1).result(timeout=30) == 2
    families = scraped_until(port, lambda m: m("pprunner_workers_alive") == 1,
                             "the endpoint").families
    exported = set().union(*families.values())
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"]
                   for target in panel.get("targets", ())]
    expressions += [variable["definition"] for variable in dashboard["templating"]["list"]
                    if "definition" in variable]
    referenced = {name for expression in expressions
                  for name in re.findall(r"\bpprunner_[a-z_]+\b", expression)}
    assert referenced, "the dashboard's panels query nothing"
    assert referenced <= exported, f"not exported: {sorted(referenced - exported)}"
    unused = [family for family, names in families.items() if not names & referenced]
    assert not unused, f"exported but on no panel: {unused}"


# -- the command line and bad input -----------------------------------------------------


def test_pprunner_run_serves_metrics_from_the_option_and_from_the_environment(
        db_url: str, cli_process, private_runtime_folder: Path) -> None:
    for how in ("option", "environment"):
        chosen = free_port()
        env = cli_env(db_url)
        argv = [*RUN, "--processes", "1"]
        if how == "option":
            argv += ["--metrics-port", f"127.0.0.1:{chosen}"]
        else:
            env["PPRUNNER_METRICS_PORT"] = f"127.0.0.1:{chosen}"
        process = cli_process(*argv, env=env)
        assert run_cli("enqueue", "--app", "tests.apps:app", "tests.apps.add",
                       "--args", "[2, 3]", "--wait", "30", env=env).stdout.split()[-1] == "5"
        found = scraped_until(chosen, lambda m: m("pprunner_invocations_succeeded_total",
                                                  task="tests.apps.add") == 1,
                              f"the run's endpoint ({how})")
        assert found("pprunner_workers_alive") == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        metrics = private_runtime_folder / "pprunner" / "metrics"
        assert not metrics.exists() or list(metrics.iterdir()) == [], "left behind"


def test_bad_metrics_settings_stop_the_run_with_one_line(db_url: str) -> None:
    env = cli_env(db_url)
    done = run_cli(*RUN, "--metrics-port", "nine", env=env)
    assert done.returncode == 3
    assert done.stderr == ("pprunner: error: setting 'metrics_port' from the command line: "
                           "expected a port, FIRST-LAST or HOST:PORT (e.g. 9100, 9100-9103, "
                           "127.0.0.1:9100), got 'nine'\n")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = run_cli(*RUN, "--metrics-port", f"127.0.0.1:{busy}", env=env)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert f"metrics_port 127.0.0.1:{busy}: port {busy} is already in use" in done.stderr

    blocked = ("import sys; sys.modules['prometheus_client'] = None; "
               "from pprunner.cli import main; sys.exit(main())")
    done = subprocess.run([sys.executable, "-c", blocked, *RUN, "--metrics-port", "9100"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr == ("pprunner: error: metrics_port is 9100, but the prometheus_client "
                           f"package is not installed: {install_extra('prometheus')}\n")


def test_the_metrics_port_setting_takes_ports_ranges_and_hosts(tmp_path: Path) -> None:
    assert config.listen_address("9100") == ("0.0.0.0", 9100, 9100)
    assert config.listen_address(9100) == ("0.0.0.0", 9100, 9100)
    assert config.listen_address("127.0.0.1:9100-9103") == ("127.0.0.1", 9100, 9103)
    assert config.listen_address("[::1]:9100") == ("::1", 9100, 9100)
    for off in (0, "0", "", "none", None):
        assert config.resolve([("t", {"metrics_port": off})]).metrics_port is None
    for bad in ("nine", "0-5", "9103-9100", "70000", True, "1.5"):
        with pytest.raises(ConfigError, match="setting 'metrics_port' from t"):
            config.resolve([("t", {"metrics_port": bad})])
    (tmp_path / "pyproject.toml").write_text('[tool.pprunner]\nmetrics_port = 9100\n')
    assert config.load({}, environ={}, cwd=tmp_path).metrics_port == "9100"
    assert config.load({}, environ={"PPRUNNER_METRICS_PORT": "9101-9102"},
                       cwd=tmp_path).metrics_port == "9101-9102"


def test_a_range_takes_the_first_free_port(app: App, supervise) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        app.configure(source="the test", metrics_port=f"127.0.0.1:{busy}-{busy + 20}")
        supervise(processes=1)
        free = wait_until(lambda: next((p for p in range(busy + 1, busy + 21)
                                        if scrape(p) is not None), None),
                          what="the endpoint on a later port of the range")
    assert scraped_until(free, lambda m: m("pprunner_workers_alive") == 1, "one worker")


# -- pprunner.Executor (push mode) -------------------------------------------------------


def test_the_executor_serves_metrics_of_its_calls_and_workers(tmp_path: Path) -> None:
    chosen = free_port()
    markers = tmp_path / "markers"
    markers.mkdir()
    with Executor(max_workers=2, on_worker_lost="retry",
                  metrics_port=f"127.0.0.1:{chosen}") as executor:
        assert list(executor.map(executor_calls.mul, range(5), range(5))) == [0, 1, 4, 9, 16]
        with pytest.raises(RuntimeError):
            executor.submit(executor_calls.raise_runtime_error).result(timeout=30)
        once = executor.submit(executor_calls.kill_self_once, str(markers / "killed"))
        assert once.result(timeout=30)
        found = scraped_until(chosen, lambda m: m("pprunner_invocations_succeeded_total",
                                                  task="kill_self_once") == 1
                              and m("pprunner_worker_boots_total") == 3,
                              "the calls' outcomes and the replacement worker")
        assert found("pprunner_invocations_enqueued_total", task="mul") == 5
        assert found("pprunner_invocations_started_total", task="mul") == 5
        assert found("pprunner_invocations_succeeded_total", task="mul") == 5
        assert found("pprunner_invocations_failed_total", task="raise_runtime_error") == 1
        assert found("pprunner_invocations_started_total", task="kill_self_once") == 2
        assert found("pprunner_invocations_rerouted_total", task="kill_self_once") == 1
        assert found("pprunner_invocation_duration_seconds_count", task="mul") == 5
        assert found("pprunner_worker_exits_total", cause="signal", exit="SIGKILL") == 1
        assert found.total("pprunner_worker_exits_total") == 1
        assert found("pprunner_workers_alive") == 2

        held = executor.submit(executor_calls.hold, str(markers), "one", "done")
        wait_until((markers / "one.started").exists, what="the held call to start")
        found = scraped_until(chosen, lambda m: m("pprunner_workers_busy") == 1, "a busy worker")
        assert found("pprunner_queue_invocations", status="running") == 1
        assert found("pprunner_queue_invocations", status="pending") == 0
        (markers / "one.release").write_text("")
        assert held.result(timeout=30) == "done"
    assert listening(chosen) is False


# -- the files and the folder ------------------------------------------------------------


def test_a_tally_file_reads_back_what_was_added_and_grows(tmp_path: Path) -> None:
    path = tmp_path / f"one{tally.SUFFIX}"
    assert tally.read(path) == {}
    counts = tally.Tally(path)
    counts.add("a", tally.STARTED)
    counts.ended("a", tally.SUCCEEDED, 0.003)
    counts.ended("a", None, 5000.0)  # refused: a duration, no counter
    names = [f"task.{n:04d}.{'x' * 40}" for n in range(200)]  # well past one page
    for name in names:
        counts.add(name, tally.ENQUEUED, 2)
    table = tally.read(path)
    row = table["a"]
    assert row[tally.STARTED] == 1 and row[tally.SUCCEEDED] == 1
    assert row[tally.DURATION_SUM] == pytest.approx(5000.003)
    assert row[tally.BUCKETS + tally.DURATION_BOUNDS.index(0.005)] == 1
    assert row[tally.BUCKETS + len(tally.DURATION_BOUNDS)] == 1  # +Inf
    assert all(table[name][tally.ENQUEUED] == 2 for name in names)
    assert path.stat().st_size > 4096

    other = tally.Tally(tmp_path / f"two{tally.SUFFIX}")
    other.merge(table)
    other.merge(table)
    combined = tally.combine([table, tally.read(other.path)])
    assert combined["a"][tally.STARTED] == 3 and combined[names[-1]][tally.ENQUEUED] == 6
    assert tally.files(tmp_path) == [path, other.path]
    counts.close()
    other.close()


def test_a_supervisor_s_folder_is_private_and_abandoned_ones_are_removed(
        private_runtime_folder: Path) -> None:
    abandoned = metrics_folder.MetricsFolder("abandoned")  # stands for a SIGKILLed one
    (abandoned.path / f"x{tally.SUFFIX}").write_bytes(b"")
    os.close(abandoned._lock)  # the kernel releases a dead process's lock like this
    mine = metrics_folder.MetricsFolder("mine")
    try:
        assert not abandoned.path.exists()
        assert not abandoned.path.with_name("abandoned.lock").exists()
        assert mine.path.is_dir() and (mine.path.stat().st_mode & 0o777) == 0o700
        other = metrics_folder.MetricsFolder("other")  # a live one is left alone
        assert mine.path.is_dir()
        other.remove()
    finally:
        mine.remove()
    assert not mine.path.exists()

