"""``python -m benchmarks hosts [--hosts 1,2,5,10,20] [--tasks N] [--lose 5] [--cluster]``:
throughput as hosts are added on one Redis, and hosts lost at once.

Each host is a network namespace (:mod:`pprunner.testing.netns`, needs root)
running ``pprunner run --processes 2`` with a host name of its own, reaching a
private ``redis-server`` over its own veth link. Per host count: N no-op tasks
are enqueued and held back (their queue renamed aside) until every worker of
every host blocks idle on Redis, then released at once (the queue renamed back
and the idle workers woken); the drain is timed from there to the last
SUCCESS, and Redis's own CPU (``INFO cpu``) over the same time says how near
one Redis core is to saturation. On a machine with fewer cores than hosts the
hosts share the cores, so the tasks/s is the machine's, and Redis's CPU per
task is the number that carries over.

Then, with the most hosts, ``--lose`` of them are lost at once a third of the
way into the drain: SIGKILLed (every process of the host), or cut off (the
root end of their links set down). The others take their work back after
``dead_after`` (2 s here); every invocation must end SUCCESS, and the count
that ran twice (attempts > 1: each had a worker die under it) is reported.

``--cluster``: the same on a Redis Cluster of three masters (each with a
replica), the hosts spread over ``--namespaces`` namespaces (3), each
namespace one slot on one master; Redis CPU is the masters' sum.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pprunner.testing import netns
from pprunner.testing.redis_servers import ClusterGroup, PrivateRedis
from pprunner_plugins.redis import RedisBackend

from . import report
from .redis_cost import NO_PERSISTENCE, REPO

HOST_COUNTS = (1, 2, 5, 10, 20)
TASKS = 20_000
WORKERS = 2
#: the hosts' settings: a host silent for 2 s is lost
HOST_SETTINGS = {"PPRUNNER_DEAD_AFTER": "2", "PPRUNNER_HEARTBEAT_INTERVAL": "0.2"}
#: how long all hosts may take to boot, and a drain to end
PATIENCE_S = 300.0
#: the private Redis listens beyond loopback (to reach every host's link): never
#: without a password
PASSWORD = uuid.uuid4().hex


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {PATIENCE_S:.0f} s waiting for {what}")
        time.sleep(0.05)


class Store:
    """The Redis the hosts share: one server, or a cluster; its URLs and CPU."""

    def __init__(self, folder: Path, hosts: Sequence[netns.Host], cluster: bool) -> None:
        # every host reaches the root namespace's addresses through its default route:
        # a cluster's nodes announce the first host's gateway, valid for all of them
        self.cluster = ClusterGroup(folder, PASSWORD, hosts[0].gateway) if cluster else None
        self.servers = self.cluster.nodes if self.cluster else [
            PrivateRedis(folder, options=NO_PERSISTENCE, password=PASSWORD)]

    def start(self) -> None:
        if self.cluster:
            self.cluster.start()
            wait_for(self.cluster.ready, "the cluster to be ready")
        else:
            self.servers[0].start()

    def url(self, address: str, prefix: str) -> str:
        """The backend URL for ``prefix``, through ``address`` (loopback for this
        process; a host's gateway for that host)."""
        if self.cluster:
            return f"{self.cluster.url_at(address)}?prefix={prefix}"
        return f"redis://:{PASSWORD}@{address}:{self.servers[0].port}/0?prefix={prefix}"

    def loopback(self) -> str:
        return self.cluster.announce if self.cluster else "127.0.0.1"

    def cpu_s(self) -> float:
        """CPU seconds the servers (the masters and their replicas) used so far."""
        total = 0.0
        for server in self.servers:
            client = server.client()
            try:
                cpu = client.info("cpu")
            finally:
                client.close()
            total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return total

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


class Namespace:
    """One app's keys (a prefix) and what this process does with them."""

    def __init__(self, store: Store, tasks: int) -> None:
        self.store, self.tasks = store, tasks
        self.prefix = f"hosts-{uuid.uuid4().hex[:8]}"
        self.backend = RedisBackend(store.url(store.loopback(), self.prefix))
        self.client: Any = self.backend.client

    def key(self, name: str) -> str:
        return f"{self.backend.prefix}:{name}"

    def enqueue_held(self) -> list[str]:
        """Enqueue the tasks, then move their queue aside; their ids."""
        from .apps import app, noop

        app.configure(source="benchmarks.hosts", replace=True, backend=self.backend.url)
        try:
            ids = [noop.enqueue(n).id for n in range(self.tasks)]
        finally:
            app.close()
        self.client.rename(self.key("queue"), self.key("held"))
        return ids

    def idle(self) -> int:
        return int(self.client.llen(self.key("idle")))

    def release(self) -> None:
        """The held queue back, and every idle worker woken to claim from it."""
        self.client.rename(self.key("held"), self.key("queue"))
        self.backend.wakeup()

    def succeeded(self) -> int:
        return int(self.client.zcard(self.key("ended")))  # no-op tasks: none fails

    def outcomes(self, ids: Sequence[str]) -> list[tuple[str, int]]:
        """(status, attempts) of each invocation."""
        pipe = self.client.pipeline(transaction=False)
        for invocation_id in ids:
            pipe.hmget(self.key(f"inv:{invocation_id}"), "status", "attempts")
        return [(status.decode(), int(attempts)) for status, attempts in pipe.execute()]


class Round:
    """One measurement: hosts started, each on one of the namespaces, with every
    namespace's tasks held back until all the workers wait."""

    def __init__(self, store: Store, hosts: Sequence[netns.Host], tasks: int,
                 namespaces: int) -> None:
        self.store, self.hosts = store, list(hosts)
        count = min(namespaces, len(hosts))
        self.namespaces = [Namespace(store, tasks // count) for _ in range(count)]
        self.tasks = sum(n.tasks for n in self.namespaces)
        self.supervisors: list[subprocess.Popen[bytes]] = []

    def namespace_of(self, index: int) -> Namespace:
        return self.namespaces[index % len(self.namespaces)]

    def start_hosts(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPRUNNER_")}
        env.update(HOST_SETTINGS, PYTHONPATH=str(REPO))
        for index, host in enumerate(self.hosts):
            url = self.store.url(host.gateway, self.namespace_of(index).prefix)
            self.supervisors.append(subprocess.Popen(
                [netns.IP, "netns", "exec", host.netns, sys.executable, "-m", "pprunner",
                 "run", "--app", "benchmarks.apps:app", "--processes", str(WORKERS)],
                cwd=REPO, env={**env, "PPRUNNER_BACKEND": url, "PPRUNNER_HOST": host.name},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: sum(n.idle() for n in self.namespaces) == WORKERS * len(self.hosts),
                 f"the {WORKERS * len(self.hosts)} workers to wait idle")

    def succeeded(self) -> int:
        return sum(n.succeeded() for n in self.namespaces)

    def stop(self) -> None:
        for supervisor in self.supervisors:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisor.pid, signal.SIGKILL)
        for supervisor in self.supervisors:
            supervisor.wait(timeout=30)
        for namespace in self.namespaces:
            namespace.backend.close()


@contextlib.contextmanager
def started(store: Store, hosts: Sequence[netns.Host], tasks: int,
            namespaces: int) -> Iterator[tuple[Round, list[list[str]]]]:
    """A round whose hosts all wait, its tasks held; the ids per namespace."""
    current = Round(store, hosts, tasks, namespaces)
    try:
        ids = [n.enqueue_held() for n in current.namespaces]
        current.start_hosts()
        yield current, ids
    finally:
        current.stop()


def drain(store: Store, hosts: Sequence[netns.Host], tasks: int,
          namespaces: int) -> tuple[str, ...]:
    """(hosts, workers, tasks/s, Redis CPU % of a core, Redis CPU us per task)."""
    with started(store, hosts, tasks, namespaces) as (current, _ids):
        cpu, began = store.cpu_s(), time.monotonic()
        for namespace in current.namespaces:
            namespace.release()
        wait_for(lambda: current.succeeded() >= current.tasks, "the drain")
        seconds, cpu = time.monotonic() - began, store.cpu_s() - cpu
    return (str(len(hosts)), str(WORKERS * len(hosts)), f"{current.tasks / seconds:,.0f}",
            f"{100 * cpu / seconds:.0f} %", f"{1e6 * cpu / current.tasks:.1f}")


def lose(store: Store, hosts: Sequence[netns.Host], tasks: int, namespaces: int, count: int,
         how: str) -> tuple[str, ...]:
    """(what happened, how many SUCCESS, how many ran twice, seconds from the loss to
    the last SUCCESS)."""
    with started(store, hosts, tasks, namespaces) as (current, ids):
        for namespace in current.namespaces:
            namespace.release()
        wait_for(lambda: current.succeeded() >= current.tasks // 3, "a third of the drain")
        lost = list(zip(hosts, current.supervisors, strict=True))[len(hosts) - count:]
        for host, supervisor in lost:  # the last ones: the first host's link stays up
            # (a cluster's nodes announce the address at its root end)
            if how == "SIGKILLed":
                os.killpg(supervisor.pid, signal.SIGKILL)
            else:
                netns.ip("link", "set", host.link, "down")
        lost_at = time.monotonic()
        wait_for(lambda: current.succeeded() >= current.tasks, "the drain after the loss")
        after = time.monotonic() - lost_at
        outcomes = [o for n, i in zip(current.namespaces, ids, strict=True)
                    for o in n.outcomes(i)]
        for host, _ in lost:
            netns.ip("link", "set", host.link, "up")
    succeeded = sum(status == "SUCCESS" for status, _ in outcomes)
    twice = sum(attempts > 1 for _, attempts in outcomes)
    return (f"{count} of {len(hosts)} hosts {how}", f"{succeeded:,} of {current.tasks:,}",
            str(twice), f"{after:.1f} s")


def counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def measure(args: argparse.Namespace, hosts: Sequence[netns.Host], folder: Path) -> None:
    store = Store(folder, hosts, args.cluster)
    namespaces = args.namespaces if args.cluster else 1
    try:
        store.start()
        rows: list[Sequence[str]] = [("hosts", "workers", "tasks/s", "Redis CPU",
                                      "Redis CPU us/task")]
        for count in args.hosts:
            rows.append(drain(store, hosts[:count], args.tasks, namespaces))
            print(f"{count} hosts done", file=sys.stderr, flush=True)
        where = f"a cluster of 3 masters, {namespaces} namespaces" if args.cluster else \
            "one Redis"
        print(f"{args.tasks:,} no-op tasks per row, {WORKERS} workers a host, {where}")
        print("\n".join(report.aligned(rows)), flush=True)
        losses: list[Sequence[str]] = [("lost", "SUCCESS", "ran twice",
                                        "loss to last SUCCESS")]
        for how in ("SIGKILLed", "cut off"):
            losses.append(lose(store, hosts, args.tasks, namespaces, args.lose, how))
        print()
        print("\n".join(report.aligned(losses)))
    finally:
        store.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks hosts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=counts, default=list(HOST_COUNTS),
                        help="host counts, comma-separated (default 1,2,5,10,20)")
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"per round (default {TASKS:,})")
    parser.add_argument("--lose", type=int, default=5, help="hosts lost at once (default 5)")
    parser.add_argument("--cluster", action="store_true",
                        help="a three-master Redis Cluster instead of one Redis")
    parser.add_argument("--namespaces", type=int, default=3,
                        help="with --cluster: how many namespaces the hosts spread over")
    args = parser.parse_args(argv)
    if max(args.hosts) - args.lose < (args.namespaces if args.cluster else 1):
        parser.error("--lose leaves a namespace without a host to take its work back")
    print(report.machine_line(report.machine()))
    try:
        with netns.hosts(max(args.hosts), f"pb{os.getpid() % 0xffff:x}") as hosts, \
                tempfile.TemporaryDirectory(prefix="pprunner-hosts-") as folder:
            measure(args, hosts, Path(folder))
    except netns.NetnsUnavailable as exc:
        print(f"cannot build the hosts: {exc}", file=sys.stderr)
        return 1
    return 0
