"""The PostgreSQL backend across real hosts, as tests/test_redis_hosts.py runs Redis:
each host a network namespace reaching the database over a veth link of its own
(through a forwarder on the link's root end, since the server listens on loopback
only). Host A is lost (its process group SIGKILLed) while its workers hold
invocations; host B recovers them once, after ``dead_after``."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pprunner import App, gather
from tests import apps
from tests.postgres_server import Forwarder, admin_connection
from tests.test_redis_hosts import (  # the same hosts, and what is checked on them
    Host,
    assert_each_ran_once_but,
    held_by,
    network,  # noqa: F401 - a fixture
    start_hosts,
    supervisors_on_hosts,
    wait_until_busy,
    workers_of,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def forwarder(network: tuple[Host, Host]) -> Iterator[Forwarder]:  # noqa: F811
    """The database, reachable on each host's link."""
    admin_connection().close()  # no server: skipped (or failed) before any host starts
    forwarder = Forwarder([host.gateway for host in network])
    try:
        yield forwarder
    finally:
        forwarder.close()


@pytest.fixture
def hosts_app(app: App, postgres_url: str) -> App:
    app.configure(source="the test", backend=postgres_url)
    return app


@pytest.fixture
def start_host(forwarder: Forwarder, postgres_url: str,
               tmp_path: Path) -> Iterator[Callable[[Host], subprocess.Popen[str]]]:
    """Supervisors on the hosts (see ``supervisors_on_hosts``), reaching the database
    through the forwarder on their own link."""
    def url_of(host: Host) -> str:
        url = postgres_url.replace("@127.0.0.1:5432/", f"@{host.gateway}:{forwarder.port}/")
        assert url != postgres_url, "the hosts would reach the database over loopback"
        return url

    with supervisors_on_hosts(url_of, tmp_path) as start:
        yield start


def test_a_host_killed_mid_batch(hosts_app: App, network: tuple[Host, Host],  # noqa: F811
                                 start_host: Callable[[Host], subprocess.Popen[str]],
                                 tmp_path: Path) -> None:
    """Host A vanishes while both its workers run something; host B takes those back
    once A's heartbeats are older than dead_after, and everything else ran once."""
    a, b = network
    doomed, _ = start_hosts(start_host, tmp_path, a, b)
    handles = [apps.whoami_slowly.enqueue(0.2) for _ in range(40)]
    wait_until_busy(hosts_app, a, b)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    held = {i.id for i in held_by(hosts_app, a)}  # frozen now: A's processes are gone
    assert len(held) == 2
    gather(handles, timeout=45)
    invocations = [h.invocation() for h in handles]
    assert_each_ran_once_but(invocations, held)
    assert all(f"on {a.name}" in i.history[0].message for i in invocations if i.id in held)
    workers_b = set(workers_of(hosts_app, b))
    assert all(h.result()["runner"] in workers_b for h in handles if h.id in held)
