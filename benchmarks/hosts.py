"""``python -m benchmarks hosts [--hosts 1,2,5,10,20] [--tasks N] [--lose 5]``:
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

from pprunner.testing import netns

from . import report
from .redis_cost import REPO, private_redis

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


class Round:
    """One measurement: a namespace of keys of its own, hosts started on it, the
    tasks held back until all of them wait."""

    def __init__(self, port: int, hosts: Sequence[netns.Host], tasks: int) -> None:
        import redis

        self.port, self.hosts, self.tasks = port, list(hosts), tasks
        self.prefix = f"hosts-{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis(port=port, password=PASSWORD)
        self.supervisors: list[subprocess.Popen[bytes]] = []

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def url(self, address: str = "127.0.0.1") -> str:
        return f"redis://:{PASSWORD}@{address}:{self.port}/0?prefix={self.prefix}"

    def enqueue_held(self) -> list[str]:
        """Enqueue the tasks, then move their queue aside; their ids."""
        from .apps import app, noop

        app.configure(source="benchmarks.hosts", replace=True, backend=self.url())
        try:
            ids = [noop.enqueue(n).id for n in range(self.tasks)]
        finally:
            app.close()
        self.client.rename(self.key("queue"), self.key("held"))
        return ids

    def start_hosts(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPRUNNER_")}
        env.update(HOST_SETTINGS, PYTHONPATH=str(REPO))
        for host in self.hosts:
            url = self.url(host.gateway)
            self.supervisors.append(subprocess.Popen(
                [netns.IP, "netns", "exec", host.netns, sys.executable, "-m", "pprunner",
                 "run", "--app", "benchmarks.apps:app", "--processes", str(WORKERS)],
                cwd=REPO, env={**env, "PPRUNNER_BACKEND": url, "PPRUNNER_HOST": host.name},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: self.client.llen(self.key("idle")) == WORKERS * len(self.hosts),
                 f"the {WORKERS * len(self.hosts)} workers to wait idle")

    def release(self) -> None:
        """The held queue back, and every idle worker woken to claim from it."""
        from pprunner_plugins.redis import RedisBackend

        self.client.rename(self.key("held"), self.key("queue"))
        backend = RedisBackend(self.url())
        try:
            backend.wakeup()
        finally:
            backend.close()

    def succeeded(self) -> int:
        return int(self.client.zcard(self.key("status:SUCCESS")))

    def cpu_s(self) -> float:
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def outcomes(self, ids: Sequence[str]) -> list[tuple[str, int]]:
        """(status, attempts) of each invocation."""
        pipe = self.client.pipeline(transaction=False)
        for invocation_id in ids:
            pipe.hmget(self.key(f"inv:{invocation_id}"), "status", "attempts")
        return [(status.decode(), int(attempts)) for status, attempts in pipe.execute()]

    def stop(self) -> None:
        for supervisor in self.supervisors:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisor.pid, signal.SIGKILL)
        for supervisor in self.supervisors:
            supervisor.wait(timeout=30)
        self.client.close()


@contextlib.contextmanager
def started(port: int, hosts: Sequence[netns.Host],
            tasks: int) -> Iterator[tuple[Round, list[str]]]:
    current = Round(port, hosts, tasks)
    try:
        ids = current.enqueue_held()
        current.start_hosts()
        yield current, ids
    finally:
        current.stop()


def drain(port: int, hosts: Sequence[netns.Host], tasks: int) -> tuple[str, ...]:
    """(hosts, workers, tasks/s, Redis CPU % of a core, Redis CPU us per task)."""
    with started(port, hosts, tasks) as (current, _ids):
        cpu, began = current.cpu_s(), time.monotonic()
        current.release()
        wait_for(lambda: current.succeeded() >= tasks, "the drain")
        seconds, cpu = time.monotonic() - began, current.cpu_s() - cpu
    return (str(len(hosts)), str(WORKERS * len(hosts)), f"{tasks / seconds:,.0f}",
            f"{100 * cpu / seconds:.0f} %", f"{1e6 * cpu / tasks:.1f}")


def lose(port: int, hosts: Sequence[netns.Host], tasks: int, count: int,
         how: str) -> tuple[str, ...]:
    """(what happened, all SUCCESS?, ran twice, seconds from the loss to the last SUCCESS)."""
    with started(port, hosts, tasks) as (current, ids):
        current.release()
        wait_for(lambda: current.succeeded() >= tasks // 3, "a third of the drain")
        for host, supervisor in list(zip(hosts, current.supervisors, strict=True))[:count]:
            if how == "SIGKILLed":
                os.killpg(supervisor.pid, signal.SIGKILL)
            else:
                netns.ip("link", "set", host.link, "down")
        lost_at = time.monotonic()
        wait_for(lambda: current.succeeded() >= tasks, "the drain after the loss")
        after = time.monotonic() - lost_at
        outcomes = current.outcomes(ids)
        for host in hosts[:count]:
            netns.ip("link", "set", host.link, "up")
    succeeded = sum(status == "SUCCESS" for status, _ in outcomes)
    twice = sum(attempts > 1 for _, attempts in outcomes)
    return (f"{count} of {len(hosts)} hosts {how}", f"{succeeded:,} of {tasks:,}", str(twice),
            f"{after:.1f} s")


def counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks hosts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=counts, default=list(HOST_COUNTS),
                        help="host counts, comma-separated (default 1,2,5,10,20)")
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"per round (default {TASKS:,})")
    parser.add_argument("--lose", type=int, default=5, help="hosts lost at once (default 5)")
    args = parser.parse_args(argv)
    print(report.machine_line(report.machine()))
    most = max(args.hosts)
    try:
        network = netns.hosts(most, f"pb{os.getpid() % 0xffff:x}")
        with network as hosts, tempfile.TemporaryDirectory(prefix="pprunner-hosts-") as folder, \
                private_redis(folder, PASSWORD) as port:
            rows: list[Sequence[str]] = [("hosts", "workers", "tasks/s", "Redis CPU",
                                          "Redis CPU us/task")]
            for count in args.hosts:
                rows.append(drain(port, hosts[:count], args.tasks))
                print(f"{count} hosts done", file=sys.stderr, flush=True)
            print(f"{args.tasks:,} no-op tasks per row, {WORKERS} workers a host, one Redis")
            print("\n".join(report.aligned(rows)), flush=True)
            losses: list[Sequence[str]] = [("lost", "SUCCESS", "ran twice",
                                            "loss to last SUCCESS")]
            for how in ("SIGKILLed", "cut off"):
                losses.append(lose(port, hosts, args.tasks, args.lose, how))
            print()
            print("\n".join(report.aligned(losses)))
    except netns.NetnsUnavailable as exc:
        print(f"cannot build the hosts: {exc}", file=sys.stderr)
        return 1
    return 0

