"""Private Redis servers for tests and benchmarks of Redis-backed plugins: one
``redis-server``, a Sentinel group (a master, a replica, three sentinels) and a
Redis Cluster (three masters with a replica each), each a set of processes on
free ports in folders of their own, started from the machine's ``redis-server``
and ``redis-cli`` and always killable at once.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` on a free loopback port, with append-only persistence in
    ``folder`` so a test can stop and start it without losing what was written.

    ``also_bind``: more local addresses to listen on (the root side of test hosts'
    links); ``url`` stays on loopback. Protected mode is off because it would
    refuse every client not on loopback, and the server listens only where told.
    With a ``password`` it listens on every address instead (Redis binds at most
    16: twenty test hosts' links are more), never without one.
    """

    def __init__(self, folder: Path, also_bind: Sequence[str] = (),
                 options: Sequence[str] = (), password: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        credentials = f":{password}@" if password else ""
        self.url = f"redis://{credentials}127.0.0.1:{self.port}/0"
        self.addresses = ("0.0.0.0",) if password else ("127.0.0.1", *also_bind)
        if password:
            options = ("--requirepass", password, "--masterauth", password, *options)
        #: more ``redis-server`` arguments (``--replicaof``, ``--cluster-enabled``...)
        self.options = tuple(options)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", *self.addresses,
                "--protected-mode", "no",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", *self.options]

    def client(self, **options: Any) -> Any:
        """A client of this server on loopback (``options``: redis-py's)."""
        return redis.Redis(port=self.port, password=self.password or None, **options)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client(socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: gone at once, with whatever it had not yet sent its replicas."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class PrivateSentinel(PrivateRedis):
    """A ``redis-server --sentinel`` watching ``master`` as ``name``, quick to act:
    a master silent for 1 s is down, and two sentinels agreeing start a failover."""

    def __init__(self, folder: Path, master: PrivateRedis, name: str) -> None:
        super().__init__(folder)
        self.url = f"127.0.0.1:{self.port}"
        self.watched = (master.port, name)

    def command(self) -> list[str]:
        port, name = self.watched
        config = self.folder / "sentinel.conf"  # a sentinel rewrites its own file
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.folder}\n"
            f"sentinel monitor {name} 127.0.0.1 {port} 2\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 10000\n")
        return ["redis-server", str(config), "--sentinel"]


class SentinelGroup:
    """One master, one replica and three sentinels, each a process of its own in a
    folder of ``folder``; ``url`` is the backend URL that reaches the master."""

    NAME = "mymaster"

    def __init__(self, folder: Path) -> None:
        self.master = PrivateRedis(folder / "master", options=("--repl-diskless-sync-delay", "0"))
        self.replica = PrivateRedis(folder / "replica",
                                    options=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinels = [PrivateSentinel(folder / f"sentinel-{n}", self.master, self.NAME)
                          for n in range(3)]
        hosts = ",".join(s.url for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{self.NAME}/0"

    def start(self) -> None:
        for server in (self.master, self.replica, *self.sentinels):
            server.start()

    def ready(self) -> bool:
        """The replica in sync, and every sentinel knowing it and the two others
        (they find each other through the master, every 2 s): a failover can happen."""
        replication = redis.Redis(port=self.replica.port).info("replication")
        if replication.get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            client: Any = redis.Redis(port=sentinel.port)
            if len(client.sentinel_sentinels(self.NAME)) < 2 or \
                    not client.sentinel_slaves(self.NAME):
                return False
        return True

    def master_port(self) -> int:
        client: Any = redis.Redis(port=self.sentinels[0].port)
        _host, port = client.sentinel_get_master_addr_by_name(self.NAME)
        return int(port)

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.kill()


class ClusterGroup:
    """A Redis Cluster of three masters, each with one replica: six processes in
    folders of ``folder``, joined by ``redis-cli --cluster create``. A master silent
    for 1 s (``cluster-node-timeout``) is failed over to its replica.

    ``announce``: the address the nodes give clients (and each other), for clients
    that cannot reach loopback (test hosts in network namespaces); those need a
    ``password`` too, as the nodes then listen on every address.
    """

    def __init__(self, folder: Path, password: str = "", announce: str = "127.0.0.1") -> None:
        # the bus port of each is a free port too: the default, port + 10000, may not be
        self.nodes = [PrivateRedis(folder / f"node-{n}", password=password, options=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()), "--cluster-node-timeout", "1000",
            "--cluster-announce-ip", announce, "--repl-diskless-sync-delay", "0"))
            for n in range(6)]
        self.password, self.announce = password, announce
        self.url = self.url_at(announce)

    def url_at(self, address: str) -> str:
        """The backend URL through the nodes as ``address`` reaches them."""
        credentials = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{credentials}" + ",".join(
            f"{address}:{n.port}" for n in self.nodes[:3])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        secret = ["-a", self.password, "--no-auth-warning"] if self.password else []
        subprocess.run(["redis-cli", *secret, "--cluster", "create",
                        *(f"{self.announce}:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)

    def ready(self) -> bool:
        """Every node sees the cluster as ok, and every replica is in sync."""
        for node in self.nodes:
            client = node.client()
            if client.cluster("info")["cluster_state"] != "ok":
                return False
            replication = client.info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True

    def master_of(self, key: str) -> PrivateRedis:
        """The node that serves ``key``'s slot now."""
        client = next(n for n in self.nodes if n.process).client()
        slot = client.cluster("keyslot", key)
        for start, end, (_host, port, *_), *_replicas in client.cluster("slots"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
