"""The Redis backend with real processes: many supervisors, outages, bad URLs; and
what only it does: the hand-off to an idle runner, resends after a lost reply."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

import pprunner.backend
import pprunner_plugins.redis
from pprunner import App, BackendError, ExitCode, Status, Supervisor, TaskFailed, gather
from pprunner.invocation import ErrorInfo
from pprunner.testing.backend_contract import Background, make_invocation
from pprunner_plugins.redis import RedisBackend
from pprunner_plugins.redis.records import fields_of, flat, pairs
from tests import apps, apps_waiting
from tests.conftest import REPO, assert_all_gone, children_of, cli_env, run_cli, wait_until
from tests.redis_server import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def redis_app(app: App, redis_url: str) -> App:
    app.configure(source="the test", backend=redis_url)
    return app


def test_results_failures_and_a_killed_worker(redis_app: App, supervise,
                                              marker_dir: Path) -> None:
    supervise(processes=2)
    assert gather([apps.add.enqueue(n, n) for n in range(20)], timeout=30) == \
        [2 * n for n in range(20)]
    with pytest.raises(TaskFailed, match="ValueError: broken"):
        apps.fail.enqueue("broken").result(timeout=30)
    handle = apps.blocks_on_first_attempt.enqueue(str(marker_dir))
    first = marker_dir / "started-1"
    wait_until(first.exists, what="the first attempt")
    os.kill(int(first.read_text()), signal.SIGKILL)
    assert handle.result(timeout=30) == 2
    assert "SIGKILL" in handle.invocation().history[0].message


def test_tasks_that_wait_for_tasks_do_not_deadlock(redis_app: App, supervise) -> None:
    supervise(processes=2)
    assert apps_waiting.fan_out.enqueue(4, "nested").result(timeout=60) == 31


@pytest.mark.parametrize(("url", "message"), [
    ("redis://127.0.0.1:1/0", "cannot reach Redis at redis://127.0.0.1:1/0"),
    ("redis://127.0.0.1:6379/0?prefix=has space", "bad Redis key prefix"),
    ("redis+cluster://127.0.0.1:1", "cannot reach Redis at redis+cluster://127.0.0.1:1"),
])
def test_an_unreachable_or_bad_redis_is_one_line_at_start(db_url: str, url: str,
                                                          message: str) -> None:
    done = run_cli("run", "--app", "tests.apps:app", "--processes", "1",
                   env=cli_env(url))
    assert done.returncode == ExitCode.BACKEND_ERROR, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, which it may stop and start."""
    import shutil

    if not shutil.which("redis-server"):
        pytest.skip("no redis-server binary to stop and start")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_work_survives_a_redis_restart(app: App, own_redis: PrivateRedis) -> None:
    app.configure(source="the test", backend=f"{own_redis.url}?prefix=restart")
    handles = [apps.whoami_slowly.enqueue(0.01) for _ in range(150)]
    with Supervisor(app, processes=2):
        wait_until(lambda: app.backend.counts()[Status.SUCCESS] >= 20, what="progress")
        own_redis.stop()
        own_redis.start()  # same port, same append-only file
        results = gather(handles, timeout=60)
    assert len(results) == 150
    invocations = [h.invocation() for h in handles]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    # nothing was lost and nothing ran twice
    assert {i.attempts for i in invocations} == {1}


#: a host's supervisor, two workers
HOST_COMMAND = (sys.executable, "-m", "pprunner", "run", "--app", "tests.apps:app",
                "--processes", "2")


@contextlib.contextmanager
def host(name: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A supervisor as host ``name``, in a session of its own so that the whole host
    (supervisor and workers) can be lost at once (:func:`lose`), and is at the end."""
    process = subprocess.Popen(HOST_COMMAND, cwd=REPO, env={**env, "PPRUNNER_HOST": name},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            lose(process)


def lose(host_process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a host's whole process group, as when the machine vanishes."""
    os.killpg(host_process.pid, signal.SIGKILL)
    host_process.wait(timeout=10)


def test_two_hosts_one_lost_mid_batch(redis_app: App, redis_url: str, cli_process) -> None:
    """Two supervisors with different host identities on one Redis; one host vanishes
    (its whole process group SIGKILLed) and the other finishes everything, once."""
    handles = [apps.whoami_slowly.enqueue(0.2) for _ in range(40)]
    env = cli_env(redis_url, PPRUNNER_DEAD_AFTER="2", PPRUNNER_HEARTBEAT_INTERVAL="0.2")
    with host("host-a", env) as doomed:
        cli_process(*HOST_COMMAND[3:], env={**env, "PPRUNNER_HOST": "host-b"})
        for name in ("host-a", "host-b"):  # both busy
            wait_until(lambda h=name: len({i.owner for i in redis_app.backend.owned_by(
                r.id for r in redis_app.backend.runners() if r.host == h)}) == 2,
                what=f"both workers of {name} to hold an invocation")
        lose(doomed)
        gather(handles, timeout=90)
    invocations = [h.invocation() for h in handles]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    recovered = [i for i in invocations if i.attempts > 1]
    # host-a's two busy workers died mid-invocation: host-b took those back, once each
    assert len(recovered) == 2
    assert all([e.type for e in i.history] == ["RunnerLost"] for i in recovered)


# -- the backend's own paths: hand-off, lost replies, closed connections ----------------


def test_the_two_hosts_example_runs(redis_url: str) -> None:
    example = subprocess.Popen([sys.executable, "-m", "examples.redis_hosts", redis_url, "100"],
                               cwd=REPO, env=cli_env(redis_url), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = example.communicate(timeout=120)
    finally:
        if example.poll() is None:  # it hangs: reap it and its hosts (sessions of their own)
            family = [*children_of(example.pid), psutil.Process(example.pid)]
            for member in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    member.kill()
            psutil.wait_procs(family, timeout=10)
            example.communicate()
    assert example.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("host a killed; all 100 invocations ended SUCCESS ")
    ran_on = dict(part.rsplit(" ", 1) for part in lines[1].removeprefix("ran on: ").split(", "))
    assert sum(map(int, ran_on.values())) == 100 and set(ran_on) <= {"host a", "host b"}


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    backend = RedisBackend(redis_url)
    yield backend
    backend.close()


def lose_the_first_reply(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch,
                         script: str) -> None:
    """The first run of ``script`` happens on the server but its reply is lost, as when
    the connection drops after the command went out: the backend has to send it again."""
    send, sha = backend._commands, backend._scripts[script][0]
    lost: list[object] = []

    def losing(*commands: tuple[object, ...]) -> list[object]:
        replies = send(*commands)
        if tuple(commands[0][:2]) == ("EVALSHA", sha) and not lost:
            lost.append(replies)
            raise redis.ConnectionError("the reply was lost (test)")
        return replies

    monkeypatch.setattr(backend, "_commands", losing)


def test_an_enqueue_hands_the_invocation_to_a_blocked_claim(backend: RedisBackend) -> None:
    claimer = Background(lambda: backend.claim("idle", timeout=30), name="claimer")
    wait_until(lambda: backend.client.lrange(f"{backend.prefix}:idle", 0, -1) == [b"idle"],
               what="the claim to wait as an idle runner")
    invocation = make_invocation()
    backend.enqueue(invocation)
    claimed = claimer.join()
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.owner, claimed.attempts) == \
        (invocation.id, Status.RUNNING, "idle", 1)
    assert backend.get(invocation.id) == claimed
    assert backend.counts()[Status.PENDING] == 0


def test_a_server_too_old_for_the_scripts_is_one_clear_error(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend.client, "info", lambda section: {"redis_version": "6.0.16"})
    with pytest.raises(BackendError, match=r"is version 6\.0\.16; pprunner needs 6\.2 or newer"):
        backend.enqueue(make_invocation())


def test_a_user_not_allowed_info_can_still_use_the_backend(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(section: str) -> None:
        raise redis.exceptions.NoPermissionError("this user has no permissions to run 'info'")

    monkeypatch.setattr(backend.client, "info", refused)
    backend.enqueue(invocation := make_invocation())
    assert backend.get(invocation.id).status is Status.PENDING


def test_an_inbox_keeps_only_what_its_runner_has_not_read(backend: RedisBackend) -> None:
    """Inbox entries carry whole records, payloads included: read ones must not pile up."""
    for _ in range(5):
        claimer = Background(lambda: backend.claim("idle", timeout=30), name="claimer")
        wait_until(lambda: backend.client.lrange(f"{backend.prefix}:idle", 0, -1) == [b"idle"],
                   what="the claim to wait as an idle runner")
        backend.enqueue(invocation := make_invocation())
        claimed = claimer.join()
        assert claimed is not None and claimed.id == invocation.id
        backend.complete(invocation.id, "idle", b"1")
    assert backend.client.xlen(f"{backend.prefix}:inbox:idle") <= 2


@pytest.mark.parametrize("waiters", [1, 3])
def test_a_blocked_wait_is_woken_by_the_ending_and_leaves_no_keys(
        backend: RedisBackend, waiters: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # waiters block 5 s between looks here, so one that sees the ending within 2 s was woken
    monkeypatch.setattr(pprunner.backend, "NOTIFIED_RECHECK", 5.0)
    monkeypatch.setattr(pprunner_plugins.redis, "BLOCK_MAX", 5.0)
    backend.enqueue(invocation := make_invocation())
    assert backend.claim("owner", timeout=1) is not None
    waiting = [Background(lambda: backend.wait(invocation.id, timeout=30), name=f"waiter {n}")
               for n in range(waiters)]
    waiters_key = f"{backend.prefix}:waiters:{invocation.id}"
    wait_until(lambda: backend.client.scard(waiters_key) == waiters,
               what="every waiter to block on the server")
    backend.complete(invocation.id, "owner", b"1")
    for waiter in waiting:
        assert waiter.join(timeout=2).status is Status.SUCCESS
    assert backend.client.keys(f"{backend.prefix}:wa*") == []  # p:waiters:*, p:wake:*


def test_a_claim_sent_again_after_a_lost_reply_is_the_same_claim(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    invocation = make_invocation()
    backend.enqueue(invocation)
    lose_the_first_reply(backend, monkeypatch, "CLAIM")
    claimed = backend.claim("r", 0)
    assert claimed is not None and (claimed.id, claimed.attempts) == (invocation.id, 1)
    assert backend.get(invocation.id) == claimed


def test_a_completion_sent_again_after_a_lost_reply_is_kept_and_strands_nothing(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lost send completed the first and claimed the second; the resend's completion
    is refused as a repeat, so the second is handed back rather than left RUNNING."""
    first, second = make_invocation(), make_invocation()
    backend.enqueue(first)
    backend.enqueue(second)
    assert backend.claim("r", 0) is not None
    lose_the_first_reply(backend, monkeypatch, "COMPLETE_AND_CLAIM")
    assert backend.complete_and_claim(first.id, "r", b"done") is None
    done = backend.get(first.id)
    assert (done.status, done.result) == (Status.SUCCESS, b"done")
    again = backend.claim("r", 0)
    assert again is not None and (again.id, again.attempts) == (second.id, 1)


def lose_the_first_enqueue(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch,
                           carried_out: int) -> None:
    """The first enqueue's HSET, RPUSH and LLEN go out, but only the first
    ``carried_out`` of them reach the server, and no reply comes back."""
    send = backend._commands
    lost: list[object] = []

    def losing(*commands: tuple[object, ...]) -> list[object]:
        if commands[0][0] == "HSET" and not lost:
            lost.append(send(*commands[:carried_out]))
            raise redis.ConnectionError("the reply was lost (test)")
        return send(*commands)

    monkeypatch.setattr(backend, "_commands", losing)


@pytest.mark.parametrize("carried_out", [1, 3], ids=["only-the-hset", "all-of-it"])
def test_an_enqueue_sent_again_after_a_lost_reply_is_queued_once(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, carried_out: int) -> None:
    invocation = make_invocation()
    backend.counts()  # connected: a failure from now on is an outage, waited out
    lose_the_first_enqueue(backend, monkeypatch, carried_out)
    backend.enqueue(invocation)
    assert backend.client.lrange(f"{backend.prefix}:queue", 0, -1) == [invocation.id.encode()]
    assert backend.get(invocation.id) == invocation


def test_an_enqueue_sent_again_leaves_what_the_first_send_became(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the lost reply and the resend, a runner claimed and finished it."""
    invocation = make_invocation()
    backend.enqueue(invocation)
    assert backend.claim("r", 0) is not None
    assert backend.complete_and_claim(invocation.id, "r", b"done") is None
    backend._script("ENQUEUE_AGAIN", invocation.id,
                    *flat(fields_of(invocation)))
    done = backend.get(invocation.id)
    assert (done.status, done.result) == (Status.SUCCESS, b"done")
    assert backend.counts()[Status.PENDING] == 0


def test_an_enqueue_that_finds_idle_runners_hands_each_one_invocation(
        backend: RedisBackend) -> None:
    """Two runners wait idle; two enqueues while the first hand-out is still to come
    (another producer's) are both handed out, none left queued behind an idle runner."""
    for runner in ("a", "b"):
        assert backend._try_claim(runner, None, True, 1) == 0  # registered idle
    queued = [make_invocation(), make_invocation()]
    for invocation in queued:
        backend.client.hset(f"{backend.prefix}:inv:{invocation.id}",
                            mapping=fields_of(invocation))
        backend.client.rpush(f"{backend.prefix}:queue", invocation.id)
    assert backend._run_retrying("HAND_OUT", repr(time.time())) == 2
    handed = {runner: backend._read_inbox(runner, 0.1) for runner in ("a", "b")}
    assert [pairs(entry, 1)[b"id"].decode() for entry in handed.values()  # type: ignore[arg-type]
            ] == [i.id for i in queued]
    assert {(i.status, i.owner) for i in map(backend.get, (i.id for i in queued))} == {
        (Status.RUNNING, "a"), (Status.RUNNING, "b")}
    assert backend._run_retrying("HAND_OUT", repr(time.time())) == 0
    assert backend.client.llen(f"{backend.prefix}:idle") == 0


def test_successes_are_counted_and_listed_from_the_endings_less_the_failures(
        backend: RedisBackend) -> None:
    """SUCCESS has no sorted set of its own (a command a task fewer): ``p:ended`` less
    ``p:failed`` counts them, and the listing skips the failures among the endings."""
    ended = {}
    for outcome in ("SUCCESS", "FAILED", "SUCCESS", "FAILED"):
        invocation = make_invocation()
        backend.enqueue(invocation)
        assert backend.claim("r", 0) is not None
        if outcome == "SUCCESS":
            backend.complete(invocation.id, "r", b"1")
        else:
            backend.fail(invocation.id, "r", ErrorInfo("E", "broken"))
        ended[invocation.id] = outcome
    succeeded = [i for i, outcome in ended.items() if outcome == "SUCCESS"]
    assert (backend.counts()[Status.SUCCESS], backend.counts()[Status.FAILED]) == (2, 2)
    assert [i.id for i in backend.invocations(Status.SUCCESS, 10)] == succeeded[::-1]
    assert [i.id for i in backend.invocations(Status.SUCCESS, 1)] == succeeded[-1:]
    assert not backend.client.exists(f"{backend.prefix}:status:SUCCESS")
    assert backend.purge(time.time() + 1, 100) == 4
    assert backend.counts()[Status.SUCCESS] == 0


def test_a_busy_worker_moves_due_retries_to_the_queue_a_few_times_a_second(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The busy path (complete and claim) looks at ``p:delayed`` once per
    RETRIES_EVERY, not once a task; a claim that finds the queue empty always does."""
    retried, *backlog = [make_invocation() for _ in range(4)]
    for invocation in (retried, *backlog):
        backend.enqueue(invocation)
    assert backend.claim("r", 0).id == retried.id  # type: ignore[union-attr]
    backend.retry(retried.id, "r", ErrorInfo("E", "again"), time.time() + 3600)
    delayed, queue = f"{backend.prefix}:delayed", f"{backend.prefix}:queue"
    running = backend.claim("r", 0)
    assert running is not None and running.id == backlog[0].id
    backend.client.zadd(delayed, {retried.id: 0})  # due now
    monkeypatch.setattr(pprunner_plugins.redis, "RETRIES_EVERY", 3600.0)
    backend._retries_looked_at = time.monotonic()
    running = backend.complete_and_claim(running.id, "r", b"1")
    assert running is not None and backend.client.zcard(delayed) == 1
    backend._retries_looked_at = time.monotonic() - 7200  # two hours ago
    running = backend.complete_and_claim(running.id, "r", b"1")
    assert running is not None and backend.client.zcard(delayed) == 0
    assert backend.client.lrange(queue, 0, -1) == [retried.id.encode()]


def test_running_ones_are_counted_and_listed_from_the_runners_owned_lists(
        backend: RedisBackend) -> None:
    """RUNNING has no sorted set of its own (two commands a task fewer): the owned
    lists of the runners in ``p:claimers`` are read, and a reroute takes the runner out."""
    queued = [make_invocation() for _ in range(3)]
    for invocation in queued:
        backend.enqueue(invocation)
    for runner in ("a", "b", "c"):
        assert backend.claim(runner, 0) is not None
    backend.pause(queued[2].id, "c", [queued[0].id])
    counts = backend.counts()
    assert (counts[Status.RUNNING], counts[Status.PAUSED], counts[Status.PENDING]) == (2, 1, 0)
    assert [i.id for i in backend.invocations(Status.RUNNING, 10)] == [queued[1].id,
                                                                      queued[0].id]
    assert [i.id for i in backend.invocations(Status.RUNNING, 1)] == [queued[1].id]
    backend.reroute("a", None)
    assert backend.counts()[Status.RUNNING] == 1
    assert backend.client.smembers(f"{backend.prefix}:claimers") == {b"b", b"c"}
    assert not backend.client.exists(f"{backend.prefix}:status:RUNNING")


def test_a_connection_the_server_closed_while_unused_is_no_outage(
        backend: RedisBackend, caplog: pytest.LogCaptureFixture) -> None:
    backend.enqueue(make_invocation())
    backend.client.client_kill_filter(_id=backend._command("CLIENT", "ID"))
    with caplog.at_level(logging.WARNING, logger="pprunner.redis"):
        assert backend.claim("r", 0) is not None
    assert "unreachable" not in caplog.text


def test_an_outage_longer_than_dead_after_takes_back_nothing(
        app: App, own_redis: PrivateRedis, cli_process) -> None:
    """Two supervisors; Redis goes away for longer than ``dead_after`` while every
    worker runs something. No runner could heartbeat meanwhile, so when Redis is back
    neither supervisor may take the other's live runners back: each task runs once."""
    url = f"{own_redis.url}?prefix=outage"
    app.configure(source="the test", backend=url, dead_after=1, heartbeat_interval=0.1)
    handles = [apps.whoami_slowly.enqueue(1.5) for _ in range(8)]
    other = cli_process("run", "--app", "tests.apps:app", "--processes", "2",
                        env=cli_env(url, PPRUNNER_DEAD_AFTER="1",
                                    PPRUNNER_HEARTBEAT_INTERVAL="0.1"))
    with Supervisor(app, processes=2):
        wait_until(lambda: app.backend.counts()[Status.RUNNING] == 4, what="4 running")
        own_redis.stop()
        time.sleep(2.5)  # the outage itself, longer than dead_after: nothing to wait for
        own_redis.start()
        gather(handles, timeout=60)
    assert other.poll() is None
    invocations = [h.invocation() for h in handles]
    assert {i.status for i in invocations} == {Status.SUCCESS}
    assert {i.attempts for i in invocations} == {1}, [i.history for i in invocations]


def test_a_producer_gives_up_on_an_outage_after_outage_timeout(
        app: App, own_redis: PrivateRedis) -> None:
    """A producer gets a BackendError after ``outage_timeout`` instead of hanging;
    nothing it had enqueued before is lost."""
    app.configure(source="the test", backend=f"{own_redis.url}?prefix=producer-outage",
                  outage_timeout=1)
    before = apps.add.enqueue(1, 1)
    own_redis.stop()
    with pytest.raises(BackendError, match=r"has been unreachable for \d+ s .*stopped waiting"):
        apps.add.enqueue(2, 2)
    own_redis.start()
    assert before.status() is Status.PENDING
    assert app.backend.counts()[Status.PENDING] == 1


def test_a_stop_during_an_outage_is_not_held_up(app: App, own_redis: PrivateRedis,
                                                cli_process) -> None:
    """SIGTERM while Redis is away: the supervisor stops its workers without handing
    back (it cannot), exits 5 with one line saying so, and what they ran is taken back
    after ``dead_after`` by the next supervisor, once Redis is back."""
    url = f"{own_redis.url}?prefix=stop-in-outage"
    app.configure(source="the test", backend=url, dead_after=1, heartbeat_interval=0.1)
    handle = apps.whoami_slowly.enqueue(3)
    doomed = cli_process("run", "--app", "tests.apps:app", "--processes", "1",
                         env=cli_env(url, PPRUNNER_HEARTBEAT_INTERVAL="0.1"))
    wait_until(lambda: handle.status() is Status.RUNNING, what="the task to start")
    family = children_of(doomed.pid)
    own_redis.stop()
    doomed.send_signal(signal.SIGTERM)
    _, stderr = doomed.communicate(timeout=30)
    assert doomed.returncode == ExitCode.BACKEND_ERROR, stderr
    assert "stopping while the backend is unreachable" in stderr
    assert_all_gone(family)
    own_redis.start()
    with Supervisor(app, processes=1):
        result = handle.result(timeout=30)
    assert result["pid"] not in {p.pid for p in family}
    assert [e.type for e in handle.invocation().history] == ["RunnerLost"]


def test_what_a_dead_runner_held_goes_to_an_idle_one_at_once(
        backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle runner blocks on its inbox for up to BLOCK_MAX; a reroute must wake it,
    or a killed worker's invocation would wait for that block to run out."""
    monkeypatch.setattr("pprunner_plugins.redis.BLOCK_MAX", 20.0)
    backend.enqueue(make_invocation())
    held = backend.claim("dead", timeout=0)
    assert held is not None
    claimer = Background(lambda: backend.claim("idle", timeout=30), name="claimer")
    wait_until(lambda: b"idle" in backend.client.lrange(f"{backend.prefix}:idle", 0, -1),
               what="the idle runner to block on its inbox")
    rerouted = time.monotonic()
    backend.reroute("dead", None)
    claimed = claimer.join()
    assert time.monotonic() - rerouted < 5, "the idle runner waited for its block to run out"
    assert claimed is not None and claimed.id == held.id


def test_a_change_waits_for_replicas_and_counts_without_them_when_none_answers(
        redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``wait_replicas=1`` on a server without replicas: the first change waits out
    its WAIT, says so once, and the next ones count without waiting."""
    monkeypatch.setattr(pprunner_plugins.redis, "REPLICA_WAIT_MS", 300)
    backend = RedisBackend(f"{redis_url}&wait_replicas=1")
    try:
        with caplog.at_level(logging.WARNING, logger="pprunner.redis"):
            started = time.monotonic()
            backend.enqueue(first := make_invocation())
            waited = time.monotonic() - started
            backend.enqueue(second := make_invocation())
        assert waited >= 0.3
        assert time.monotonic() - started - waited < 0.3  # counted without waiting
        assert caplog.text.count("0 of 1 replicas acknowledged a change within 300 ms") == 1
        assert {backend.get(i.id).status for i in (first, second)} == {Status.PENDING}
    finally:
        backend.close()
