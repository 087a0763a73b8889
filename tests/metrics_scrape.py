"""Scraping a metrics endpoint in tests: bounded polls until the numbers are there."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Scrape:
    """One scrape: every sample by name and labels, and each family's sample names."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.families: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                        "gauge": ("",)}[family.type]
            self.families[family.name] = {family.name + suffix for suffix in suffixes}
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for one not exposed (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum over every label set."""
        return sum(value for (sample, _), value in self.samples.items() if sample == name)


def listening(port: int) -> bool:
    """Whether something listens on the port (a bind that allows TIME_WAIT fails)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def scrape(port: int) -> Scrape | None:
    """The endpoint's numbers now; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return Scrape(reply.read().decode())
    except OSError:
        return None


def scraped_until(port: int, expected: Callable[[Scrape], bool], what: str,
                  timeout: float = 30) -> Scrape:
    """Scrape until ``expected`` holds (bounded); the scrape it held for."""
    return wait_until(lambda: (found := scrape(port)) is not None and expected(found) and found,
                      timeout, what)
