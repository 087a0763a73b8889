"""The Redis backend across real hosts: each host a network namespace of its own,
linked to the root namespace by a veth pair, reaching a private Redis over that
link and never over loopback. A host is lost (SIGKILL) or cut off (its link
down) while its workers hold invocations; the other host recovers them.

Needs root and ``ip netns``: without them the tests are skipped with the reason,
unless ``PPRUNNER_REQUIRE_NETNS=1`` (set by CI), which makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pprunner import App, Invocation, Status, gather
from pprunner.invocation import RunnerKind
from pprunner.testing import netns
from pprunner.testing.netns import IP, Host, NetnsUnavailable, ip
from tests import apps
from tests.conftest import REPO, RUN, children_of, cli_env, wait_until
from tests.redis_server import PrivateRedis, skip_or_fail

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PREFIX = "hosts"
#: the hosts' settings: a host silent for 2 s is lost
HOST_SETTINGS = {"PPRUNNER_DEAD_AFTER": "2", "PPRUNNER_HEARTBEAT_INTERVAL": "0.2"}


def netns_unavailable(reason: str) -> None:
    if os.environ.get("PPRUNNER_REQUIRE_NETNS", "") not in ("", "0"):
        pytest.fail(f"PPRUNNER_REQUIRE_NETNS is set but {reason}")
    pytest.skip(reason)


@pytest.fixture
def network() -> Iterator[tuple[Host, Host]]:
    """Hosts A and B, each a namespace on a /30 link of its own; always deleted after."""
    tag = f"pp{os.getpid():x}"  # at most 8 characters: link names end in "a-r" (15 max)
    with contextlib.ExitStack() as built:
        try:
            a, b = built.enter_context(netns.hosts(2, tag))
        except (NetnsUnavailable, OSError) as exc:
            netns_unavailable(f"cannot build network namespaces: {exc}")
        yield a, b


@pytest.fixture
def hosts_redis(network: tuple[Host, Host], tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis listening on loopback (for the test) and on each host's link."""
    if not shutil.which("redis-server"):
        skip_or_fail("no redis-server binary on PATH to listen on the hosts' links")
    server = PrivateRedis(tmp_path, also_bind=[host.gateway for host in network])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hosts_app(app: App, hosts_redis: PrivateRedis) -> App:
    app.configure(source="the test", backend=f"{hosts_redis.url}?prefix={PREFIX}")
    return app


@pytest.fixture
def start_host(hosts_redis: PrivateRedis,
               tmp_path: Path) -> Iterator[Callable[[Host], subprocess.Popen[str]]]:
    with supervisors_on_hosts(
            lambda host: f"redis://{host.gateway}:{hosts_redis.port}/0?prefix={PREFIX}",
            tmp_path) as start:
        yield start


@contextlib.contextmanager
def supervisors_on_hosts(url_of: Callable[[Host], str], tmp_path: Path
                         ) -> Iterator[Callable[[Host], subprocess.Popen[str]]]:
    """Start a two-worker supervisor inside a host's namespace, on the backend
    ``url_of(host)``, in a process group of its own, logging to ``tmp_path/<host>.log``;
    every group is SIGKILLed after, and the logs are printed (pytest shows them when
    the test failed)."""
    groups: dict[Host, subprocess.Popen[str]] = {}

    def start(host: Host) -> subprocess.Popen[str]:
        with (tmp_path / f"{host.name}.log").open("w") as log:
            process = subprocess.Popen(
                [IP, "netns", "exec", host.netns, sys.executable, "-m", "pprunner", *RUN,
                 "--processes", "2"],
                cwd=REPO, env=cli_env(url_of(host), PPRUNNER_HOST=host.name, **HOST_SETTINGS),
                stdout=subprocess.DEVNULL, stderr=log, text=True, start_new_session=True)
        groups[host] = process
        return process

    try:
        yield start
    finally:
        for process in groups.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for host, process in groups.items():
            process.wait(timeout=10)
            print(f"--- {host.name} ---\n{log_of(host, tmp_path)}")


def log_of(host: Host, tmp_path: Path) -> str:
    return (tmp_path / f"{host.name}.log").read_text()


def workers_of(app: App, host: Host) -> list[str]:
    return [r.id for r in app.backend.runners()
            if r.host == host.name and r.kind is RunnerKind.WORKER]


def held_by(app: App, host: Host) -> list[Invocation]:
    return app.backend.owned_by(workers_of(app, host))


def start_hosts(start_host: Callable[[Host], subprocess.Popen[str]], tmp_path: Path,
                *hosts: Host) -> list[subprocess.Popen[str]]:
    """Start a supervisor on each host; return once all their workers are ready, so
    that no host takes the whole batch while another still boots."""
    started = [start_host(host) for host in hosts]
    for host in hosts:
        wait_until(lambda h=host: log_of(h, tmp_path).count(" ready (app ") == 2, timeout=30,
                   what=f"the workers of {host.name} to be ready")
    return started


def wait_until_busy(app: App, *hosts: Host) -> None:
    """Until both workers of each host hold an invocation."""
    for host in hosts:
        wait_until(lambda h=host: len({i.owner for i in held_by(app, h)}) == 2, timeout=30,
                   what=f"both workers of {host.name} to hold an invocation")


def client_addresses(server: PrivateRedis) -> set[str]:
    """The addresses Redis sees its clients come from."""
    client = redis.Redis(port=server.port)
    try:
        return {c["addr"].rsplit(":", 1)[0] for c in client.client_list()}
    finally:
        client.close()


def assert_each_ran_once_but(invocations: list[Invocation], recovered: set[str]) -> None:
    """All SUCCESS; those in ``recovered`` lost one attempt to RunnerLost, nothing else
    ran twice."""
    assert {i.status for i in invocations} == {Status.SUCCESS}
    assert {i.id for i in invocations if i.attempts > 1} == recovered
    for invocation in invocations:
        lost = ["RunnerLost"] if invocation.id in recovered else []
        assert [e.type for e in invocation.history] == lost, invocation
        assert invocation.attempts == 1 + len(lost), invocation


def test_a_host_killed_mid_batch(hosts_app: App, network: tuple[Host, Host],
                                 hosts_redis: PrivateRedis, start_host,
                                 tmp_path: Path) -> None:
    """Host A vanishes (its whole process group SIGKILLed) while both its workers run
    something; host B, which reaches Redis over its own link, takes those back."""
    a, b = network
    doomed, _ = start_hosts(start_host, tmp_path, a, b)
    handles = [apps.whoami_slowly.enqueue(0.2) for _ in range(40)]
    wait_until_busy(hosts_app, a, b)
    assert client_addresses(hosts_redis) == {"127.0.0.1", a.address, b.address}
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    held = {i.id for i in held_by(hosts_app, a)}  # frozen now: A's processes are gone
    assert len(held) == 2
    gather(handles, timeout=45)
    invocations = [h.invocation() for h in handles]
    assert_each_ran_once_but(invocations, held)
    assert all(f"on {a.name}" in i.history[0].message for i in invocations if i.id in held)


def test_a_partitioned_host_is_recovered_and_its_late_results_refused(
        hosts_app: App, network: tuple[Host, Host], start_host, tmp_path: Path) -> None:
    """Host A's link goes down while its workers hold invocations. B recovers them
    after ``dead_after`` and finishes the batch; when the link comes back, A's late
    completions are refused, and A, which never crashed, goes on serving."""
    a, b = network
    host_a, _ = start_hosts(start_host, tmp_path, a, b)
    handles = [apps.whoami_slowly.enqueue(0.2) for _ in range(20)]
    wait_until_busy(hosts_app, a, b)
    family_a = {p.pid for p in children_of(host_a.pid)}
    ip("link", "set", a.link, "down")
    held = {i.id for i in held_by(hosts_app, a)}  # frozen now: A cannot reach Redis
    assert len(held) == 2
    gather(handles, timeout=45)
    invocations = [h.invocation() for h in handles]
    assert_each_ran_once_but(invocations, held)
    workers_b = set(workers_of(hosts_app, b))
    assert all(h.result()["runner"] in workers_b for h in handles if h.id in held)

    ip("link", "set", a.link, "up")
    healed_at = time.time()
    # New work at once: the heartbeat the cut delayed lands late, and counts from then
    # (the server's clock), so B must not take A's live runners back a second time.
    more = [apps.whoami_slowly.enqueue(0.2) for _ in range(30)]
    wait_until(lambda: log_of(a, tmp_path).count("outcome refused") == 2, timeout=30,
               what="host A's two late completions to be refused")
    assert [h.invocation() for h in handles] == invocations  # B's outcomes stand
    # A heartbeats again with the processes it had: nothing crashed or was respawned.
    wait_until(lambda: len(workers_of(hosts_app, a)) == 2 and all(
        r.heartbeat_at > healed_at for r in hosts_app.backend.runners() if r.host == a.name),
        what="host A's runners to heartbeat again")
    assert host_a.poll() is None
    assert {p.pid for p in children_of(host_a.pid)} == family_a
    assert "Traceback" not in log_of(a, tmp_path)
    ran_on = {result["runner"] for result in gather(more, timeout=30)}
    assert ran_on & set(workers_of(hosts_app, a)) and ran_on & workers_b
    assert {h.invocation().attempts for h in more} == {1}
