"""Test hosts as Linux network namespaces, for tests and benchmarks of a store
that many hosts share (the Redis backend's ``tests/test_redis_hosts.py``,
``python -m benchmarks hosts``).

Each host is a namespace with one veth link to the root namespace, a /30 of
its own in LINK_RANGE: its processes reach the store over that link, never
over loopback, and setting the root end down cuts the host off. Needs root and
``ip netns``; every failure of an ``ip`` command is :class:`NetnsUnavailable`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import attrs

IP = shutil.which("ip", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "ip"
#: test hosts' links are /30s of this range (not the machine's own network)
LINK_RANGE = ipaddress.ip_network("10.64.0.0/10")


class NetnsUnavailable(Exception):
    """An ``ip`` command that builds the test network failed."""


@attrs.frozen
class Host:
    """A test host: a network namespace with one veth link to the root namespace."""

    #: its PPRUNNER_HOST
    name: str
    netns: str
    #: the root namespace's end of the link: down means this host is cut off
    link: str
    #: the host's own address, inside its namespace
    address: str
    #: the root end's address, where the store listens for this host
    gateway: str


def ip(*args: str) -> str:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def free_block(links: int) -> ipaddress.IPv4Network:
    """A block of LINK_RANGE for ``links`` /30 links that no address of the root
    namespace is in; the search starts at one the pid picks, so parallel runs do
    not collide."""
    size = 4 * 2 ** max(links - 1, 0).bit_length()
    used = [ipaddress.ip_interface(line.split()[3]).network
            for line in ip("-4", "-o", "addr", "show").splitlines()]
    blocks = LINK_RANGE.num_addresses // size
    for offset in range(blocks):
        index = (os.getpid() + offset) % blocks
        block = ipaddress.IPv4Network((int(LINK_RANGE.network_address) + size * index,
                                       32 - size.bit_length() + 1))
        if not any(block.overlaps(network) for network in used):
            return block
    raise NetnsUnavailable(f"no free block of {links} links left in {LINK_RANGE}")


def plan_hosts(count: int, tag: str) -> list[Host]:
    """``count`` hosts named host-a, host-b... (host-1, host-2... past 26), on
    links of a free block; ``tag`` (at most 8 characters) starts their names."""
    links = list(free_block(count).subnets(new_prefix=30))[:count]
    names = "abcdefghijklmnopqrstuvwxyz" if count <= 26 else [str(n) for n in range(count)]
    return [Host(name=f"host-{name}", netns=f"{tag}{name}", link=f"{tag}{name}-r",
                 address=str(link[2]), gateway=str(link[1]))
            for name, link in zip(names, links, strict=False)]


def add_host(host: Host) -> None:
    ip("netns", "add", host.netns)
    peer = f"{host.link[:-1]}h"
    ip("link", "add", host.link, "type", "veth", "peer", "name", peer, "netns", host.netns)
    ip("addr", "add", f"{host.gateway}/30", "dev", host.link)
    ip("link", "set", host.link, "up")
    ip("-n", host.netns, "addr", "add", f"{host.address}/30", "dev", peer)
    ip("-n", host.netns, "link", "set", peer, "up")
    ip("-n", host.netns, "link", "set", "lo", "up")
    # every address of the root namespace is reachable over the link (a cluster's
    # nodes announce one address to all hosts)
    ip("-n", host.netns, "route", "add", "default", "via", host.gateway)


def remove_host(host: Host) -> None:
    """Kill whatever still runs in the namespace, then delete it and the link, each
    step even if the one before failed.

    A namespace outlives ``ip netns del`` while a process is in it, and takes its
    end of the veth pair along only when it goes, hence the kill first.
    """
    try:
        with contextlib.suppress(NetnsUnavailable):
            for pid in ip("netns", "pids", host.netns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 10
            while ip("netns", "pids", host.netns).split():
                if time.monotonic() > deadline:
                    raise NetnsUnavailable(f"the processes in {host.netns} did not die")
                time.sleep(0.05)
    finally:
        for command in (("netns", "del", host.netns), ("link", "del", host.link)):
            with contextlib.suppress(NetnsUnavailable):
                ip(*command)


@contextlib.contextmanager
def hosts(count: int, tag: str) -> Iterator[list[Host]]:
    """``count`` hosts (see :func:`plan_hosts`), built, and always removed after;
    :class:`NetnsUnavailable` when they cannot be built (none is left behind)."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    built: list[Host] = []
    try:
        for host in plan_hosts(count, tag):
            built.append(host)  # first: a host half built is removed too
            add_host(host)
        yield built
    finally:
        for host in built:
            remove_host(host)
