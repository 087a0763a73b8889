"""A third-party-style plugin module that provides a backend and a serializer."""

from __future__ import annotations

import argparse
from typing import Any

import pprunner
from pprunner.plugins import Command
from pprunner_plugins.json import JSONSerializer
from pprunner_plugins.memory import MemoryBackend


class SortedJSON(JSONSerializer):
    """JSON with sorted keys: stable bytes for the same value."""

    name = "sorted-json"

    def dumps(self, value: Any) -> bytes:
        import json

        return json.dumps(value, sort_keys=True, allow_nan=False).encode()


def _echo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    print("echo:", " ".join(args.words))
    return len(args.words)


@pprunner.hookimpl
def pprunner_register_commands(register: Any) -> None:
    register(Command("provider-echo", _echo, help="print the words after it",
                     arguments=lambda parser: parser.add_argument("words", nargs="*")))


@pprunner.hookimpl
def pprunner_register_backends(register: Any) -> None:
    register("scratch", MemoryBackend)


@pprunner.hookimpl
def pprunner_register_serializers(register: Any) -> None:
    register(SortedJSON())
