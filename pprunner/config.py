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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "PPRUNNER_"
DEFAULT_BACKEND = "sqlite:///.pprunner/pprunner.db"
START_METHODS = ("spawn", "forkserver", "fork")
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


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, but None (or an empty string, or "none") means "not set"."""
    def parse_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return parse(value)

    return parse_optional


def _setting(default: Any, parse: Callable[[Any], Any], doc: str) -> Any:
    return attrs.field(default=default, metadata={"parse": parse, "doc": doc})


@attrs.frozen
class Config:
    """The effective settings of an app. See the README's configuration table."""

    backend: str = _setting(DEFAULT_BACKEND, _text,
                            "backend URL; its scheme picks the backend plugin")
    serializer: str = _setting("json", _text,
                               "serializer for new invocations' arguments and results")
    processes: int = _setting(os.cpu_count() or 1, _number(int, 0),
                              "worker processes; 0 runs tasks inline in the supervisor")
    start_method: str = _setting("spawn", _choice(*START_METHODS),
                                 "how worker processes start (multiprocessing)")
    shutdown_timeout: float = _setting(30.0, _number(float, 0),
                                       "seconds workers get to finish at a graceful stop")
    heartbeat_interval: float = _setting(1.0, _number(float, 0, strict=True),
                                         "seconds between supervisor heartbeats")
    claim_timeout: float = _setting(1.0, _number(float, 0, strict=True),
                                    "longest an idle worker blocks in one claim")
    max_attempts: int = _setting(3, _number(int, 1),
                                 "attempts per invocation when its worker dies (task default)")
    log_level: str = _setting("INFO", _choice(*LOG_LEVELS, upper=True), "logging level")
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
    wait_strategy: str = _setting(
        "nested", _text, "what a worker does while its task waits for others: nested or poll")
    max_wait_depth: int = _setting(
        32, _number(int, 1), "how deeply the nested strategy may run awaited invocations")
    dead_after: float = _setting(
        30.0, _number(float, 0, strict=True),
        "seconds without a heartbeat after which another supervisor takes back what a "
        "runner held")
    health_file: str | None = _setting(
        None, _optional(_text), "file the supervisor rewrites every iteration (liveness, "
        "readiness)")

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
