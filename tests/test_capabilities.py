"""A backend with the required core alone (tests/core_backend.py): the contract runs its
core and skips each capability by name, and every caller that needs a capability
says so in one line — the admin commands, a task that waits — while the rest works."""

from __future__ import annotations

import subprocess
import sys
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest

import pprunner.cli
from pprunner import App, ExitCode, InlineSupervisor, Status
from pprunner.backend import CAPABILITIES, Admin, Pausing, Recovery
from pprunner.worker import ClaimedInvocations, Worker, WorkerContext
from tests import core_backend
from tests.conftest import REPO
from tests.test_plugins import fake_distribution


@pytest.fixture
def core_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The app on ``core://``, the scheme registered by an entry point as a third
    party's plugin would be, and a fresh store for each test."""
    site = fake_distribution(tmp_path / "site", "pprunner-core-only",
                             {"core_only": "tests.core_backend"})
    monkeypatch.syspath_prepend(str(site))
    app = core_backend.app
    app.configure(source="the test", replace=True, backend=f"{core_backend.SCHEME}://",
                  claim_timeout=0.05)
    yield app
    app.close()
    app.configure(source="the test", replace=True)


def test_the_built_in_backends_declare_every_capability() -> None:
    from pprunner_plugins.memory import MemoryBackend
    from pprunner_plugins.postgres import PostgresBackend
    from pprunner_plugins.redis import RedisBackend
    from pprunner_plugins.sqlite import SQLiteBackend

    for backend in (MemoryBackend, SQLiteBackend, RedisBackend, PostgresBackend):
        assert all(issubclass(backend, capability) for capability in CAPABILITIES), backend
    assert not any(issubclass(core_backend.CoreOnlyBackend, c) for c in CAPABILITIES)


def test_the_contract_runs_the_core_alone_and_skips_each_capability_by_name(
        tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_backend_contract.py::TestCoreOnlyBackend",
         "-p", "no:cacheprovider", f"--junitxml={report}", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = {}
    for case in ElementTree.parse(report).iter("testcase"):
        skipped = case.find("skipped")
        outcome[case.get("name")] = "passed" if skipped is None else skipped.get("message", "")
    core = {"test_claim_makes_the_invocation_running_for_its_runner",
            "test_reroute_after_a_crash_requeues_with_the_error[running]",
            "test_only_the_owner_may_change_an_invocation[complete]",
            "test_a_late_result_after_reroute_is_refused[crash]",
            "test_counts_follow_the_statuses[RUNNING]", "test_wakeup_releases_a_blocked_claim"}
    assert {name: outcome[name] for name in core} == dict.fromkeys(core, "passed")
    needs = {"test_reroute_after_a_crash_requeues_with_the_error[paused]": Pausing,
             "test_only_the_owner_may_change_an_invocation[pause]": Pausing,
             "test_claim_one_of_respects_not_before": Pausing,
             "test_counts_follow_the_statuses[PAUSED]": Pausing,
             "test_requeue_all_takes_every_failed_one": Admin,
             "test_purge_keeps_what_is_unfinished_or_finished_since_the_cutoff[running]": Admin,
             "test_forget_runners_removes_them": Admin,
             "test_only_one_of_several_recoverers_acts": Recovery,
             "test_stale_runners_are_those_with_an_old_heartbeat": Recovery}
    for name, capability in needs.items():
        assert f"does not declare the {capability.__name__} capability" in outcome[name], name
    reasons = {message for message in outcome.values() if message != "passed"}
    assert all("does not declare the" in r or "does not announce endings" in r
               for r in reasons), reasons


@pytest.mark.parametrize("command", [["status"], ["failed"], ["retry", "--all"],
                                     ["purge", "--older-than", "1d"], ["scale", "2"],
                                     ["top", "--once"]],
                         ids=lambda command: command[0])
def test_an_admin_command_without_the_admin_capability_is_one_line(
        core_app: App, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = pprunner.cli.main([*command, "--app", "tests.core_backend:app"])
    out, err = capsys.readouterr()
    assert (code, out) == (ExitCode.CONFIG_ERROR, "")
    assert err == (f"pprunner: error: pprunner {command[0]} needs a backend with the Admin "
                   "capability (runners, invocations, ended_since, latest_failures, requeue, "
                   "purge); CoreOnlyBackend "
                   "(core://) does not declare it\n")


def test_a_command_that_needs_only_the_core_works_without_a_capability(
        core_app: App, capsys: pytest.CaptureFixture[str]) -> None:
    assert pprunner.cli.main(["enqueue", "--app", "tests.core_backend:app",
                              "tests.core_backend.double", "--args", "[4]"]) == ExitCode.OK
    stored = core_app.backend.get(capsys.readouterr().out.strip())
    assert (stored.task, stored.status) == ("tests.core_backend.double", Status.PENDING)


def test_a_task_that_waits_fails_in_one_line_without_the_pausing_capability(
        core_app: App) -> None:
    """Failing the task, not blocking its slot: a plain blocking wait is how a fixed
    pool deadlocks on a fan-out, and without PAUSED records no cycle can be seen."""
    parent = core_backend.double_and_wait.enqueue(21)
    context = WorkerContext(app=core_app, runner_id="w", slot=1, runner_cache={},
                            stop_event=threading.Event())
    Worker(context, ClaimedInvocations(context, burst=True)).run()
    failed = parent.invocation()
    assert failed.status is Status.FAILED and failed.error is not None
    assert (failed.error.type, failed.error.message) == (
        "pprunner.errors.MissingCapability",
        "a task waiting for other invocations needs a backend with the Pausing capability "
        "(pause, resume, claim_one_of); CoreOnlyBackend (core://) does not declare it")
    assert core_app.backend.counts()[Status.SUCCESS] == 1, "the child still ran, as usual"


def test_a_supervisor_on_a_core_only_backend_skips_recovery_and_purging(core_app: App) -> None:
    handle = core_backend.double.enqueue(4)
    assert InlineSupervisor(core_app, burst=True).run() == ExitCode.OK
    assert handle.result(timeout=1) == 8
