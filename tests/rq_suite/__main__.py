"""Fetch RQ's tests for the installed RQ and run its worker tests against our worker.

Usage: ``python -m tests.rq_suite [--rq-worker] [pytest arguments]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rq.version import VERSION

from tests import sdist_tests

_IN_PROCESS = ("a SimpleWorker test: the job runs in the test's own process, where the "
               "test's mock.patch applies; a horse is another process")
_FORK_INHERITS_PATCH = ("patches the test process and counts on the forked horse "
                        "inheriting the patch; a spawned horse (ours, RQ's SpawnWorker) "
                        "imports the real code")

#: RQ's tests not run, each with why: they test forking itself (a horse that shares
#: the test process's memory) or SimpleWorker's running jobs in its own process,
#: which a persistent, spawned horse replaces by design
EXCLUDED: dict[str, str] = {
    "tests/test_worker.py::TestWorker::test_work_via_simpleworker":
        "asserts that the job runs in the worker's own process (SimpleWorker: no horse)",
    "tests/test_worker.py::TestWorker::test_simpleworker_heartbeat_ttl":
        "SimpleWorker cannot heartbeat while its job runs, so it registers for the job's "
        "whole timeout; a worker with a horse heartbeats as RQ's Worker does",
    "tests/test_rate_limit.py::TestRateLimitEnqueue::test_release_after_aborted_immediate_repeat":
        _IN_PROCESS,
    "tests/test_repeat.py::TestWorkerRepeat::test_repeat_state_survives_transaction_retry":
        _IN_PROCESS,
    **{f"tests/test_webhooks.py::WorkerWebhookTestCase::{name}": _IN_PROCESS for name in (
        "test_terminal_status_fires_only_matching_webhook",
        "test_retry_exhausted_fires_failed_once", "test_retry_then_success_skips_failed",
        "test_return_based_retry_exhaustion_fires_failed")},
    "tests/test_worker.py::TestWorker::test_horse_fails": _FORK_INHERITS_PATCH,
    "tests/test_worker.py::TestWorker::test_job_dependency_race_condition": _FORK_INHERITS_PATCH,
    "tests/test_intermediate_queue.py::TestIntermediateQueue::test_no_cleanup_while_in_started_queue":
        _FORK_INHERITS_PATCH,
    "tests/test_cli.py::TestRQCli::test_cli_enqueue_with_job_class": _FORK_INHERITS_PATCH,
    "tests/test_worker.py::TestWorker::test_custom_exc_handling":
        "its exception handlers are functions local to the test, which a forked horse "
        "inherits; a spawned horse gets the worker's settings by pickle (names only)",
}

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    ours = "--rq-worker" not in argv
    arguments = [a for a in argv if a != "--rq-worker"]
    folder = sdist_tests.cache_folder("rq", VERSION, "PPRUNNER_RQ_SUITE_CACHE")
    sdist_tests.fetch("rq", VERSION, "tests", folder, "tests")
    # RQ's tests' conftest.py: not named so here, or pytest would load its hooks
    # (which deselect every test that builds no RQ worker) for our own suite too
    shutil.copy(HERE / "swapped_worker.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow\n    ssl_test\n")
    # RQ's slow tests too: one of them is a horse's death under a job
    environment = dict(os.environ, PPRUNNER_RQ_SUITE_WORKER="pprunner" if ours else "rq",
                       RUN_SLOW_TESTS_TOO="1")
    environment.pop("PYTHONPATH", None)  # RQ's `tests` package, not ours
    deselected = [f"--deselect={test}" for test in EXCLUDED] if ours else []
    command = [sys.executable, "-m", "pytest", "-o", f"cache_dir={folder / '.cache'}",
               *deselected, "tests", *arguments]
    code = subprocess.run(command, cwd=folder, env=environment).returncode
    if code != 1:  # passed, or could not run at all: nothing to try again
        return code
    # Some of RQ's tests give a job a fixed second or two to start, which a horse
    # booting on a loaded machine can miss (RQ's fork takes milliseconds): the tests
    # that failed run once more, alone, and the run fails only if they fail again.
    print("rq_suite: running the tests that failed once more, on their own", flush=True)
    return subprocess.run([*command, "--last-failed"], cwd=folder, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
