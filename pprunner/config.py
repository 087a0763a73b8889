"""Settings, and where each value came from.

Layers, later ones winning: the ``App(...)`` arguments, ``[tool.pprunner]``
in the nearest ``pyproject.toml`` (from the working directory upwards),
``PPRUNNER_<NAME>`` environment variables, command-line flags. A bad value
anywhere is a :class:`~pprunner.errors.ConfigError` naming the setting and
its source, so a typo in a deployment's environment is found at start, not
in the middle of the night.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError

ENV_PREFIX = "PPRUNNER_"
DEFAULT_BACKEND = "sqlite:///.pprunner/pprunner.db"
START_METHODS = ("spawn", "forkserver", "fork", "template")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _number(kind: type, minimum: float, *, strict: bool = False) -> Callable[[Any], Any]:
    bound = f"> {minimum}" if strict else f">= {minimum}"

    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number {bound}, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'} "
                             f"{bound}, got {value!r}") from None
        if number < minimum or (strict and number == minimum):
            raise ValueError(f"expected a number {bound}, got {value!r}")
        return number

    return parse


def _choice(*choices: str, upper: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).upper() if upper else str(value)
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _flag(value: Any) -> bool:
    """A switch: a TOML or Python bool, or a word as an environment variable has it."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false (1/0, yes/no, on/off), got {value!r}")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _names(value: Any) -> tuple[str, ...]:
    """A list of names, or one string of comma-separated names (as in an environment variable)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected a list of names or a comma-separated string, got {value!r}")
    names = tuple(item.strip() for item in items if item.strip())
    if not names:
        raise ValueError("expected at least one name")
    return names


#: shortest signing key accepted: an HMAC is only as strong as its key
MIN_KEY_LENGTH = 16


def _signing_keys(value: Any) -> tuple[str, ...]:
    """Comma-separated keys; an error never quotes one."""
    try:
        keys = _names(value)
    except ValueError:
        raise ValueError("expected one or more keys, comma-separated") from None
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"key {number} is {len(key)} characters long; use at least "
                             f"{MIN_KEY_LENGTH} (e.g. python -c 'import secrets; "
                             f"print(secrets.token_urlsafe(32))')")
    return keys


def _scaled(kind: type, what: str, units: Mapping[str, float], unit_names: str,
            example: str) -> Callable[[Any], Any]:
    """A parser of ``what``: a number, or a string with one of ``units`` after it."""
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a {what}, got {value!r}")
        text = str(value).strip().lower()
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
        unit = text[len(number):].strip()
        if unit not in units:
            raise ValueError(f"unknown {what} unit {unit!r} in {value!r}; use {unit_names}")
        try:
            amount = kind(float(number) * units[unit])
        except ValueError:
            raise ValueError(f"expected a {what} such as {example}, got {value!r}") from None
        if amount < 0:
            raise ValueError(f"expected a {what} >= 0, got {value!r}")
        return amount

    return parse


#: bytes: an integer, or a string such as ``"512KiB"``, ``"10MB"``, ``"1 GiB"``
_size = _scaled(int, "size", {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10,
                              "m": 10**6, "mb": 10**6, "mib": 2**20, "g": 10**9,
                              "gb": 10**9, "gib": 2**30},
                "B, KB, KiB, MB, MiB, GB or GiB", "10MiB")
#: seconds: a number, or a string such as ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``
#: (``pprunner purge --older-than`` takes the same)
parse_duration = _scaled(float, "duration", {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400},
                         "s, m, h or d", "7d")


#: where an HTTP endpoint listens when the setting names only a port: every interface
ANY_HOST = "0.0.0.0"


def listen_address(value: Any) -> tuple[str, int, int]:
    """``PORT``, ``FIRST-LAST`` (the first free one of those ports: several
    supervisors on one host with one setting), each with an optional ``HOST:``
    before it, as ``(host, first, last)``."""
    text = "" if isinstance(value, bool) else str(value).strip()
    host, _, ports = text.rpartition(":")
    first_text, dash, last_text = ports.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if dash else first
    except ValueError:
        raise ValueError(f"expected a port, FIRST-LAST or HOST:PORT (e.g. 9100, 9100-9103, "
                         f"127.0.0.1:9100), got {value!r}") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"expected ports from 1 to 65535, the first no greater than the "
                         f"last, got {value!r}")
    return host.strip("[]") or ANY_HOST, first, last


def _listen(value: Any) -> str | None:
    """A checked :func:`listen_address` as text; 0 means off."""
    if str(value).strip() == "0":
        return None
    listen_address(value)
    return str(value).strip()


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, but None (or an empty string, or "none") means "not set"."""
    def parse_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return parse(value)

    return parse_optional


def _setting(default: Any, parse: Callable[[Any], Any], doc: str, *,
             secret: bool = False) -> Any:
    """A setting; a ``secret`` one is left out of ``repr`` (and so out of any log line)."""
    return attrs.field(default=default, repr=not secret,
                       metadata={"parse": parse, "doc": doc, "secret": secret})


@attrs.frozen
class Config:
    """The effective settings of an app. See docs/configuration.md's table."""

    backend: str = _setting(DEFAULT_BACKEND, _text,
                            "backend URL; its scheme picks the backend plugin")
    serializer: str = _setting("json", _text,
                               "serializer for new invocations' arguments and results")
    accept_serializers: tuple[str, ...] | None = _setting(
        None, _optional(_names), "serializers a worker decodes (an allow-list); default: the "
        "app's serializer and every safe one")
    signing_keys: tuple[str, ...] | None = _setting(
        None, _optional(_signing_keys), "HMAC keys, comma-separated: the first signs, all "
        "verify; unsigned or tampered payloads fail", secret=True)
    max_payload_size: int = _setting(
        10 * 2**20, _size, "largest encoded arguments or result, in bytes (e.g. 512KiB, "
        "10MiB); 0: no limit")
    processes: int = _setting(os.cpu_count() or 1, _number(int, 0),
                              "worker processes; 0 runs tasks inline in the supervisor")
    start_method: str = _setting(
        "template", _choice(*START_METHODS), "how worker processes start: template (forked "
        "from a process that imported the app), spawn, forkserver or fork")
    shutdown_timeout: float = _setting(30.0, _number(float, 0),
                                       "seconds workers get to finish at a graceful stop")
    heartbeat_interval: float = _setting(1.0, _number(float, 0, strict=True),
                                         "seconds between supervisor heartbeats")
    claim_timeout: float = _setting(1.0, _number(float, 0, strict=True),
                                    "longest an idle worker blocks in one claim")
    max_attempts: int = _setting(3, _number(int, 1),
                                 "attempts per invocation when its worker dies (task default)")
    log_level: str = _setting("INFO", _choice(*LOG_LEVELS, upper=True),
                              "logging level: DEBUG, INFO, WARNING or ERROR")
    time_limit: float | None = _setting(
        None, _optional(_number(float, 0, strict=True)),
        "hard limit in seconds per invocation (task default); the worker is killed")
    soft_time_limit: float | None = _setting(
        None, _optional(_number(float, 0, strict=True)),
        "seconds after which SoftTimeLimitExceeded is raised in the task (task default)")
    max_tasks_per_child: int = _setting(0, _number(int, 0),
                                        "recycle a worker after this many invocations; 0: never")
    max_tasks_jitter: int = _setting(0, _number(int, 0),
                                     "add 0..N to max_tasks_per_child, per worker")
    max_memory_per_child: int = _setting(
        0, _number(int, 0), "recycle a worker whose resident memory after an invocation "
        "exceeds this many MiB; 0: never")
    boot_timeout: float = _setting(60.0, _number(float, 0, strict=True),
                                   "seconds a new worker has to load the app and report ready")
    crash_loop_period: float = _setting(
        60.0, _number(float, 0, strict=True),
        "stop (exit 7) when no worker could be kept booted for this long")
    max_lent_slots: int | None = _setting(
        None, _optional(_number(int, 0)), "at most this many extra workers run while workers "
        "wait inside lend_slot() (a result.get() in a Celery task); default: as many as "
        "processes; 0: no lending")
    spare_workers: int = _setting(
        0, _number(int, 0), "workers booted ahead, with no slot, that take a dead, recycled "
        "or lent worker's place at once; 0: a fresh worker boots instead")
    wait_strategy: str = _setting(
        "nested", _text, "what a worker does while its task waits for others: nested, lend or poll")
    max_wait_depth: int = _setting(
        32, _number(int, 1), "how deeply the nested strategy may run awaited invocations")
    dead_after: float = _setting(
        30.0, _number(float, 0, strict=True),
        "seconds without a heartbeat after which another supervisor takes back what a "
        "runner held")
    outage_timeout: float = _setting(
        30.0, _number(float, 0), "seconds a producer (enqueue, result, the command line) "
        "waits for an unreachable backend before it raises BackendError; workers and "
        "supervisors wait as long as it takes")
    keep_finished: float = _setting(
        86400.0, parse_duration, "how long SUCCESS and FAILED invocations are kept after they "
        "finish (seconds, or e.g. 12h, 7d); the supervisor deletes older ones; 0: forever")
    health_file: str | None = _setting(
        None, _optional(_text), "file the supervisor rewrites every iteration (liveness, "
        "readiness)")
    tracing: bool = _setting(
        False, _flag, "an OpenTelemetry span per invocation, linked to its producer's "
        "(needs pprunner[otel]); off: the tracing plugin registers nothing")
    metrics_port: str | None = _setting(
        None, _optional(_listen), "serve Prometheus metrics of the supervisor and its workers "
        "on this port (PORT, FIRST-LAST: the first free one, HOST:PORT); 0 or none: off; "
        "needs pprunner[prometheus]")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, safe to hand to a worker process."""
        return attrs.asdict(self)


SETTING_NAMES = tuple(f.name for f in attrs.fields(Config))


def describe_settings() -> list[tuple[str, str, Any, str]]:
    """(name, environment variable, default, description) for every setting."""
    return [(f.name, ENV_PREFIX + f.name.upper(), f.default, f.metadata["doc"])
            for f in attrs.fields(Config)]


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml from ``start`` (default: the working directory) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def pyproject_layer(path: Path | None) -> tuple[str, dict[str, Any]]:
    if path is None:
        return ("pyproject.toml", {})
    source = f"{path} [tool.pprunner]"
    if sys.version_info >= (3, 11):  # imported here: most processes never read the file
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        with path.open("rb") as stream:
            table = tomllib.load(stream).get("tool", {}).get("pprunner", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    unknown = sorted(set(table) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in {source}; "
                          f"known settings: {', '.join(SETTING_NAMES)}")
    return (source, table)


def environment_layer(environ: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    values = {name: environ[ENV_PREFIX + name.upper()] for name in SETTING_NAMES
              if ENV_PREFIX + name.upper() in environ}
    return ("environment", values)


def resolve(layers: list[tuple[str, Mapping[str, Any]]]) -> Config:
    """Merge ``(source, values)`` layers, later winning, and validate each value.

    Values of None are "not given" and do not override.
    """
    chosen: dict[str, tuple[str, Any]] = {}
    for source, values in layers:
        for name, value in values.items():
            if name not in SETTING_NAMES:
                raise ConfigError(f"unknown setting {name!r} (from {source}); "
                                  f"known settings: {', '.join(SETTING_NAMES)}")
            if value is not None:
                chosen[name] = (source, value)
    parsed = {}
    fields = attrs.fields_dict(Config)
    for name, (source, value) in chosen.items():
        where = f"environment {ENV_PREFIX}{name.upper()}" if source == "environment" else source
        try:
            parsed[name] = fields[name].metadata["parse"](value)
        except ValueError as exc:
            raise ConfigError(f"setting {name!r} from {where}: {exc}") from None
    return Config(**parsed)


def load(app_settings: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
         *, environ: Mapping[str, str] | None = None, cwd: Path | None = None,
         overrides_source: str = "command line") -> Config:
    """The effective Config: app arguments < pyproject < environment < overrides."""
    return resolve([
        ("App(...) arguments", app_settings),
        pyproject_layer(find_pyproject(cwd)),
        environment_layer(os.environ if environ is None else environ),
        (overrides_source, overrides or {}),
    ])
