"""``python -m benchmarks.serializers``: what each serializer costs per invocation.

A typical call, ``{"user": ..., "action": ..., "score": 0.93, "ids": [0..99]}``,
goes the whole way a payload goes: encoded as a call by the producer
(:meth:`pprunner.payloads.Codec.encode_call`, which also checks the size
limit and the allow-list), decoded by the worker (``decode_call``), and the
same dict encoded as the result and decoded by the producer. Each
serializer is timed plain and with ``signing_keys`` set (HMAC-SHA256 on both
payloads). Times are microseconds per invocation: the median of 7 rounds of
2,000 invocations each. No processes, no backend: the serializer's share of
a task alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pprunner.config import load
from pprunner.invocation import Invocation
from pprunner.payloads import Codec
from pprunner.plugins import get_plugin_manager

from . import report

PAYLOAD: dict[str, Any] = {"user": "ada@example.org", "action": "recompute-scores",
                           "score": 0.93, "ids": list(range(100))}
INVOCATIONS = 2_000
ROUNDS = 7
SIGNING_KEY = "benchmark-signing-key-0123456789"


def per_invocation_us(codec: Codec, serializer: str) -> float:
    """One round: microseconds per encode + decode of a call and of its result."""
    started = time.perf_counter()
    for number in range(INVOCATIONS):
        invocation_id = f"inv-{number}"
        payload = codec.encode_call(invocation_id, "reports.recompute", serializer,
                                    [PAYLOAD], {})
        invocation = Invocation(id=invocation_id, task="reports.recompute", payload=payload,
                                serializer=serializer)
        (value,), _ = codec.decode_call(invocation)
        result = codec.encode_result(invocation, value)
        codec.decode_result(Invocation(id=invocation_id, task="reports.recompute",
                                       payload=payload, serializer=serializer, result=result))
    return 1e6 * (time.perf_counter() - started) / INVOCATIONS


def measure() -> list[tuple[str, int, float, float]]:
    """``(serializer, call bytes, µs plain, µs signed)`` for every usable serializer."""
    serializers = get_plugin_manager().registry.serializers
    rows = []
    for name, serializer in sorted(serializers.items()):
        if serializer.unavailable():
            continue
        plain, signed = (
            statistics.median(per_invocation_us(codec, name) for _ in range(ROUNDS))
            for codec in (Codec(serializers, load({"serializer": name, "signing_keys": keys},
                                                  environ={}), {})
                          for keys in (None, SIGNING_KEY)))
        rows.append((name, len(serializer.dumps({"args": [PAYLOAD], "kwargs": {}})), plain,
                     signed))
    return rows


def show(rows: list[tuple[str, int, float, float]]) -> str:
    json_us = next(plain for name, _, plain, _ in rows if name == "json")
    table = [("serializer", "call bytes", "encode+decode, us", "vs json", "signed, us")]
    table += [(name, str(size), f"{plain:.1f}", f"{plain / json_us:.2f}x", f"{signed:.1f}")
              for name, size, plain, signed in rows]
    return "\n".join(report.aligned(table))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serializers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print(report.machine_line(report.machine()))
    print(f"one call and its result per invocation: {PAYLOAD['action']!r} payload with 100 ints; "
          f"median of {ROUNDS} rounds x {INVOCATIONS:,}")
    print(show(measure()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
