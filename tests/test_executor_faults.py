"""``pprunner.Executor`` when things go wrong, with real worker processes.

A worker killed by a signal or exiting under a call, a call past its hard or
soft time limit, recycling by task count, an initializer that raises, the
start methods, a script's ``__main__``, and no process left behind. Where
``ProcessPoolExecutor`` breaks (``BrokenProcessPool`` for every future, and
for good), pprunner fails the one call, or runs it again, and keeps serving.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from pprunner import Executor, SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLost
from pprunner.executor import BrokenExecutor
from tests import executor_calls as calls
from tests.conftest import Gates, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 30


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    """Shared by the crash tests: surviving them is what they check."""
    with Executor(max_workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def limited() -> Iterator[Executor]:
    """Calls get 0.3 s before SoftTimeLimitExceeded, 1.5 s before their worker is killed."""
    with Executor(max_workers=2, soft_time_limit=0.3, time_limit=1.5) as executor:
        yield executor


def has_exited(pid: int) -> bool:
    """The process is gone, or a zombie its parent has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def serving_pids(executor: Executor) -> set[int]:
    """The pids of both workers: calls are submitted four at a time, and each goes
    to an idle worker, until two pids have answered."""
    seen: set[int] = set()

    def both() -> bool:
        batch = [executor.submit(calls.pid) for _ in range(4)]
        seen.update(f.result(timeout=TIMEOUT) for f in batch)
        return len(seen) >= 2

    wait_until(both, timeout=TIMEOUT, what="both workers to serve")
    return seen


# ---------------------------------------------------------------------------
# a worker dies under a call
# ---------------------------------------------------------------------------


def test_sigkill_fails_only_that_call(executor: Executor, gates: Gates) -> None:
    """ProcessPoolExecutor: BrokenProcessPool for every future, and for good.
    pprunner: WorkerLost naming the signal for the one call; the one running
    beside it and the queued ones succeed, and the executor keeps serving."""
    beside = gates.hold(executor, "beside", value="beside")
    gates.wait_started("beside")
    killed = executor.submit(calls.kill_self)
    queued = [executor.submit(calls.mul, i, 2) for i in range(6)]

    with pytest.raises(WorkerLost, match="SIGKILL") as lost:
        killed.result(timeout=TIMEOUT)
    assert lost.value.signal == "SIGKILL"
    assert lost.value.exitcode == -9
    assert "kill_self" in str(lost.value)
    assert f"pid {lost.value.pid}" in str(lost.value)

    assert [f.result(timeout=TIMEOUT) for f in queued] == [0, 2, 4, 6, 8, 10]
    gates.release("beside")
    assert beside.result(timeout=TIMEOUT) == "beside"
    more = [executor.submit(calls.pid) for _ in range(4)]
    pids = {f.result(timeout=TIMEOUT) for f in more}
    assert lost.value.pid not in pids


def test_exit_code_is_named(executor: Executor) -> None:
    future = executor.submit(calls.exit_with, 3)
    with pytest.raises(WorkerLost, match="exited with code 3") as lost:
        future.result(timeout=TIMEOUT)
    assert lost.value.exitcode == 3 and lost.value.signal is None
    assert executor.submit(calls.mul, 3, 3).result(timeout=TIMEOUT) == 9


def test_stdlib_pool_breaks_where_pprunner_serves_on(tmp_path: Path) -> None:
    """What the tests above improve on, shown rather than claimed."""
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=2,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(calls.kill_self).result(timeout=TIMEOUT)
        with pytest.raises(BrokenProcessPool):
            pool.submit(calls.mul, 1, 1)


def test_retry_runs_a_lost_call_again(new_executor: Any, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """on_worker_lost="retry": the call killed its worker on its first attempt only
    (a marker remembers), runs again on another worker and succeeds."""
    executor = new_executor(on_worker_lost="retry", max_attempts=2)
    marker = tmp_path / "killed-once"
    result = executor.submit(calls.kill_self_once, str(marker)).result(timeout=TIMEOUT)
    first_pid = int(marker.read_text())
    assert result.startswith("second attempt in pid ")
    assert int(result.rsplit(" ", 1)[1]) != first_pid
    assert "raised" not in caplog.text  # its second start is no news to its future

    always = executor.submit(calls.kill_self)
    with pytest.raises(WorkerLost, match="SIGKILL"):  # after max_attempts starts
        always.result(timeout=TIMEOUT)
    assert executor.submit(calls.mul, 4, 4).result(timeout=TIMEOUT) == 16


# ---------------------------------------------------------------------------
# time limits
# ---------------------------------------------------------------------------


def test_hard_time_limit_replaces_the_worker(limited: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "overrunner"
    future = limited.submit(calls.ignore_soft_limit, str(marker), 30)
    with pytest.raises(TimeLimitExceeded, match=r"hard time limit of 1\.5 s") as exceeded:
        future.result(timeout=TIMEOUT)
    killed = int(marker.read_text())
    assert f"pid {killed}" in str(exceeded.value)
    assert has_exited(killed)
    pids = serving_pids(limited)
    assert len(pids) == 2 and killed not in pids


def test_soft_time_limit_is_raised_in_the_call(limited: Executor) -> None:
    future = limited.submit(calls.run_past, 30)
    with pytest.raises(SoftTimeLimitExceeded, match="soft time limit exceeded by run_past"):
        future.result(timeout=TIMEOUT)
    caught = limited.submit(calls.catch_soft_limit, 30).result(timeout=TIMEOUT)
    assert caught == "caught: soft time limit exceeded by catch_soft_limit"


def test_a_call_s_own_time_limit_replaces_the_executor_s(new_executor: Any) -> None:
    executor = new_executor(max_workers=1)
    future = executor.submit_limited(calls.run_past, (30,), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded, match=r"hard time limit of 0\.5 s"):
        future.result(timeout=TIMEOUT)
    assert executor.submit_limited(calls.mul, (6,), {"y": 7}).result(timeout=TIMEOUT) == 42


# ---------------------------------------------------------------------------
# recycling and initializers
# ---------------------------------------------------------------------------


def test_max_tasks_per_child_rotates_workers(new_executor: Any) -> None:
    """Workers are replaced after two calls each and no future is lost on the way.

    A worker due for recycling serves on until its replacement has booted
    (no capacity is lost), so a pid may serve more than two calls."""
    executor = new_executor(max_tasks_per_child=2, max_tasks_jitter=0)
    seen: set[int] = set()
    submitted = 0

    def rotated() -> bool:
        nonlocal submitted
        batch = [executor.submit(calls.pid) for _ in range(4)]
        submitted += len(batch)
        seen.update(f.result(timeout=TIMEOUT) for f in batch)
        return len(seen) >= 4

    wait_until(rotated, timeout=TIMEOUT, what="four different worker pids")
    everything = [executor.submit(calls.mul, i, i) for i in range(20)]
    assert [f.result(timeout=TIMEOUT) for f in everything] == [i * i for i in range(20)]


@pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_forked_workers_exit_when_recycled(new_executor: Any) -> None:
    """A worker forked while calls were pending does not wait for the parent's
    futures as it exits (the interpreter's exit shuts down running executors:
    not the parent's, in a forked child)."""
    executor = new_executor(mp_context=multiprocessing.get_context("fork"),
                            max_tasks_per_child=1, max_tasks_jitter=0)
    pids = {f.result(timeout=TIMEOUT) for f in [executor.submit(calls.pid) for _ in range(6)]}

    wait_until(lambda: sum(map(has_exited, pids)) >= len(pids) - 2, timeout=TIMEOUT,
               what="the recycled workers to exit")


def test_initializer_runs_once_per_worker(new_executor: Any, tmp_path: Path) -> None:
    log = tmp_path / "initialized"
    executor = new_executor(initializer=calls.remember, initargs=("configured", str(log)))
    results = [f.result(timeout=TIMEOUT) for f in
               [executor.submit(calls.state) for _ in range(12)]]
    assert {value for value, _ in results} == {"configured"}
    workers = serving_pids(executor)
    results = [f.result(timeout=TIMEOUT) for f in
               [executor.submit(calls.state) for _ in range(12)]]
    assert {value for value, _ in results} == {"configured"}
    initialized = [int(pid) for pid in log.read_text().split()]
    assert sorted(initialized) == sorted(workers)  # each worker once, no one else


def test_raising_initializer_breaks_the_executor_once(new_executor: Any,
                                                      tmp_path: Path) -> None:
    """One clear error for every future, quickly; no respawn loop; later
    submits raise it too."""
    log = tmp_path / "attempts"
    executor = new_executor(initializer=calls.refuse_to_start, initargs=(str(log),))
    started = time.monotonic()
    fs = [executor.submit(calls.mul, i, i) for i in range(4)]
    for future in fs:
        error = future.exception(timeout=TIMEOUT)
        assert isinstance(error, BrokenExecutor)
        assert "refuse_to_start raised RuntimeError: the database is not there" in str(error)
    assert time.monotonic() - started < 15
    with pytest.raises(BrokenExecutor, match="the database is not there"):
        executor.submit(calls.mul, 1, 1)
    assert len(log.read_text().split()) <= 2  # each worker tried once, none respawned


# ---------------------------------------------------------------------------
# start methods, pickling, scripts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", [
    {"start_method": "spawn"},
    {"mp_context": multiprocessing.get_context("forkserver")},
    pytest.param({"start_method": "fork"}, marks=pytest.mark.filterwarnings(
        "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")),
], ids=["spawn", "forkserver", "fork"])
def test_start_methods(new_executor: Any, how: dict[str, Any]) -> None:
    executor = new_executor(**how)
    assert executor.submit(calls.mul, 6, 7).result(timeout=TIMEOUT) == 42
    assert executor.submit(calls.pid).result(timeout=TIMEOUT) != os.getpid()


def test_cloudpickle_runs_a_lambda(new_executor: Any) -> None:
    executor = new_executor(pickler="cloudpickle")
    offset = 5
    assert executor.submit(lambda x: x + offset, 1).result(timeout=TIMEOUT) == 6
    assert list(executor.map(lambda x: x * offset, range(4), chunksize=3)) == [0, 5, 10, 15]


SCRIPT = '''
import sys
from concurrent.futures import ProcessPoolExecutor

from pprunner import Executor


def square(x):
    return x * x


if __name__ == "__main__":
    pool_class = Executor if sys.argv[1] == "pprunner" else ProcessPoolExecutor
    with pool_class(max_workers=2) as pool:
        print(list(pool.map(square, range(6))), pool.submit(square, 7).result(timeout=30))
'''


def run_python(directory: Path, *args: str, deadline: float = 60
               ) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` as a user runs it: from ``directory``, with no PYTHONPATH and
    no PPRUNNER_ settings. A run that does not exit by ``deadline`` fails the test
    (``TimeoutExpired``), its process killed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PPRUNNER_") and k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=deadline)


def run_script(directory: Path, source: str, *args: str,
               deadline: float = 60) -> subprocess.CompletedProcess[str]:
    """``source`` written to ``directory/script.py`` and run as ``python script.py ARGS``."""
    script = directory / "script.py"
    script.write_text(textwrap.dedent(source))
    return run_python(directory, str(script), *args, deadline=deadline)


@pytest.mark.parametrize("pool_class", ["pprunner", "stdlib"])
def test_script_main_guard(tmp_path: Path, pool_class: str) -> None:
    """A function of the script's ``__main__`` runs in the workers, and a normal
    run writes nothing to stderr, as with ProcessPoolExecutor."""
    run = run_script(tmp_path, SCRIPT, pool_class)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == "[0, 1, 4, 9, 16, 25] 49\n"


WITHOUT_GUARD = '''
import multiprocessing
import sys

from pprunner import Executor


def square(x):
    return x * x


context = multiprocessing.get_context(sys.argv[1])
pool = Executor(2, mp_context=context)
print(list(pool.map(square, range(4), timeout=30)))
pool.shutdown()
'''


def test_script_without_main_guard_fails_at_once_saying_what_to_do(tmp_path: Path) -> None:
    """spawn re-runs the script in each worker, whose own Executor cannot start
    processes there: not a transient boot failure. Every future fails at once with
    one message naming the script and the two ways out, instead of a minute of
    respawns (the standard library's pool fails in a fraction of a second too)."""
    run = run_script(tmp_path, WITHOUT_GUARD, "spawn", deadline=30)
    assert run.returncode == 1 and run.stdout == ""
    advice = (f"before it could start: it failed re-importing the main script "
              f"{tmp_path / 'script.py'}, as every worker started with spawn would. Keep what "
              f"the script runs under `if __name__ == \"__main__\":`, or start the workers "
              f"with fork (mp_context=multiprocessing.get_context(\"fork\"))")
    last = run.stderr.splitlines()[-1]
    assert last.startswith("pprunner.executor.BrokenExecutor: the executor's workers cannot "
                           "start: worker "), run.stderr
    assert last.endswith(advice)
    assert run.stderr.count("stopping instead of respawning") == 1
    assert run.stderr.count("An attempt has been made to start a new process") <= 2  # a worker's


def test_script_without_main_guard_runs_with_fork(tmp_path: Path) -> None:
    """The way out the message names: fork does not re-run the script."""
    run = run_script(tmp_path, WITHOUT_GUARD, "fork", deadline=30)
    assert (run.returncode, run.stderr, run.stdout) == (0, "", "[0, 1, 4, 9]\n")


FROM_COMMAND_LINE = '''
from pprunner import Executor


def sq(x):
    return x * x


if __name__ == "__main__":
    with Executor(2) as pool:
        print(repr(pool.submit(sq, 3).exception(timeout=30)))
        print(pool.submit(pow, 2, 5).result(timeout=30))
'''


def test_function_of_python_c_fails_its_call_naming_it(tmp_path: Path) -> None:
    """``python -c``: the workers cannot import ``sq`` (spawn has no script to run
    again). Its call fails saying so, with the original error's type; the worker
    that could not read it serves on."""
    run = run_python(tmp_path, "-c", textwrap.dedent(FROM_COMMAND_LINE), deadline=30)
    assert (run.returncode, run.stderr) == (0, "")
    error, result = run.stdout.splitlines()
    assert error.startswith("AttributeError('cannot import `sq` from `__main__` in the worker: "
                            "a function defined in `python -c`")
    assert 'pickler="cloudpickle"' in error and 'get_context("fork")' in error
    assert result == "32"


UNDER_THE_GUARD = '''
from pprunner import Executor

if __name__ == "__main__":
    def sq(x):
        return x * x

    with Executor(2) as pool:
        print(repr(pool.submit(sq, 3).exception(timeout=30)))
'''


def test_function_under_the_guard_fails_its_call_naming_it(tmp_path: Path) -> None:
    """The script's re-import in the worker skips what is under its guard."""
    run = run_script(tmp_path, UNDER_THE_GUARD, deadline=30)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.startswith("AttributeError('cannot import `sq` from `__main__` in the "
                                 "worker: the script does not define it at its top level")


WITHOUT_SHUTDOWN = '''
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from pprunner import Executor


def sleep_and_print(seconds, message):
    time.sleep(seconds)
    print(message, flush=True)


if __name__ == "__main__":
    pool_class = Executor if sys.argv[1] == "pprunner" else ProcessPoolExecutor
    pool = pool_class(5, mp_context=get_context(sys.argv[2]))
    pool.submit(sleep_and_print, 1.0, "apple")
'''


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
@pytest.mark.parametrize("pool_class", ["pprunner", "stdlib"])
def test_interpreter_shutdown(tmp_path: Path, pool_class: str, start_method: str) -> None:
    """CPython's test_interpreter_shutdown: a script submits and never calls
    shutdown(); the call runs, then the interpreter exits, quietly."""
    run = run_script(tmp_path, WITHOUT_SHUTDOWN, pool_class, start_method, deadline=30)
    assert (run.returncode, run.stderr, run.stdout) == (0, "", "apple\n")


SUBMIT_AT_EXIT = '''
import atexit
import sys
from concurrent.futures import ProcessPoolExecutor

from pprunner import Executor


def run_last():
    try:
        pool.submit(id, None)
    except RuntimeError as exc:
        print(exc)


if __name__ == "__main__":
    atexit.register(run_last)
    pool = (Executor if sys.argv[1] == "pprunner" else ProcessPoolExecutor)(2)
    pool.submit(id, 42).result(timeout=30)
'''


@pytest.mark.parametrize("pool_class", ["pprunner", "stdlib"])
def test_submit_after_interpreter_shutdown(tmp_path: Path, pool_class: str) -> None:
    """CPython's test_submit_after_interpreter_shutdown: once the interpreter is
    exiting, the executor is shut down and submit raises what the standard
    library's pool raises."""
    run = run_script(tmp_path, SUBMIT_AT_EXIT, pool_class, deadline=30)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == "cannot schedule new futures after shutdown\n"


NEW_AT_EXIT = '''
import atexit

from pprunner import Executor


def run_last():
    try:
        Executor(2).submit(id, None)
    except RuntimeError as exc:
        print(exc)


if __name__ == "__main__":
    atexit.register(run_last)
'''


def test_no_new_workers_once_the_interpreter_exits(tmp_path: Path) -> None:
    """An executor made as the interpreter exits starts no workers (they would
    keep it from exiting): its submit raises, as the standard library's does."""
    run = run_script(tmp_path, NEW_AT_EXIT, deadline=30)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == "cannot schedule new futures after interpreter shutdown\n"


# ---------------------------------------------------------------------------
# nothing left behind
# ---------------------------------------------------------------------------


def test_shutdown_leaves_no_child_process(new_executor: Any) -> None:
    """Every process the executor started (workers, a replaced one, the helper)
    has exited and been reaped once shutdown() returns."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    executor = new_executor()
    with pytest.raises(WorkerLost):
        executor.submit(calls.kill_self).result(timeout=TIMEOUT)
    workers = {f.result(timeout=TIMEOUT) for f in [executor.submit(calls.pid)
                                                  for _ in range(4)]}
    started = {p.pid for p in me.children(recursive=True)} - before
    assert workers <= started
    executor.shutdown()
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    assert left == []
