"""pprunner's settings for a Celery worker: Celery's own options first, then
``pprunner_*`` keys in the Celery config, then ``PPRUNNER_*`` environment.

Celery already has a setting for the worker count, the task-count and memory
recycling and the time limits (``-c``, ``--max-tasks-per-child``,
``--max-memory-per-child``, ``--time-limit``/``--soft-time-limit``); those
stay Celery's, and a ``pprunner_`` key for them is refused with one line
naming Celery's. The others (:data:`SETTINGS`) are pprunner's own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from pprunner import config as config_module
from pprunner.config import Config
from pprunner.errors import ConfigError

#: the Celery config prefix of pprunner's keys
PREFIX = "pprunner_"

#: pprunner's settings a Celery worker takes, and what it means there
SETTINGS = {
    "start_method": "how children start: spawn (default), forkserver or fork",
    "boot_timeout": "seconds a new child has to import the app and run Celery's initializer",
    "crash_loop_period": "the worker stops (Celery logs the pool's failure) when no child "
                         "could be kept booted for this long",
    "shutdown_timeout": "seconds a warm shutdown waits for running tasks before their "
                        "children get SIGTERM (default: one day, as prefork waits)",
    "health_file": "file rewritten every second: pid, children booted, ready",
    "log_level": "level of pprunner's own log lines (default WARNING)",
    "max_tasks_jitter": "add 0..N to --max-tasks-per-child per child, so children do not "
                        "all recycle at once",
    "max_lent_slots": "at most this many extra children run while tasks wait in "
                      "result.get() (default: -c; 0: none); a wait past it while every child "
                      "waits fails its task",
    "heartbeat_interval": "seconds between supervisor iterations when nothing happens",
    "metrics_port": "serve Prometheus metrics of the pool (the worker's supervisor and its "
                    "children) on this port (pprunner[prometheus])",
}

#: pprunner settings Celery owns: the Celery setting to use instead
CELERY_OWNS = {
    "processes": "-c / worker_concurrency",
    "max_tasks_per_child": "--max-tasks-per-child / worker_max_tasks_per_child",
    "max_memory_per_child": "--max-memory-per-child / worker_max_memory_per_child (KiB)",
    "time_limit": "--time-limit / task_time_limit",
    "soft_time_limit": "--soft-time-limit / task_soft_time_limit",
}

#: pprunner's defaults where a Celery worker needs another one
DEFAULTS = {"log_level": "WARNING", "shutdown_timeout": 86400.0}


def kib_to_mib(kib: int | None) -> int:
    """Celery's ``max_memory_per_child`` is KiB, pprunner's MiB: rounded up, so a
    limit below one MiB still recycles (0 stays "never")."""
    return math.ceil(kib / 1024) if kib else 0


def resolve(pool_options: Mapping[str, Any], celery_conf: Mapping[str, Any] | None,
            environ: Mapping[str, str] | None = None) -> Config:
    """The pool's Config from the options Celery's worker gives a pool (``limit``
    and the keyword options), its config and the environment."""
    environ = os.environ if environ is None else environ
    from_celery = {
        "processes": pool_options.get("limit") or os.cpu_count() or 1,
        "max_tasks_per_child": pool_options.get("maxtasksperchild") or 0,
        "max_memory_per_child": kib_to_mib(pool_options.get("max_memory_per_child")),
    }
    from_conf = {}
    for key in celery_conf or {}:
        if not (isinstance(key, str) and key.lower().startswith(PREFIX)):
            continue
        name = key[len(PREFIX):].lower()
        if name in CELERY_OWNS:
            raise ConfigError(f"{key} is Celery's to set here: use {CELERY_OWNS[name]}")
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting {key!r} in the Celery config; pprunner's "
                              f"settings for Celery: {', '.join(PREFIX + n for n in SETTINGS)}")
        from_conf[name] = celery_conf[key]  # type: ignore[index]
    from_env = {name: environ[env] for name in SETTINGS
                if (env := config_module.ENV_PREFIX + name.upper()) in environ}
    return config_module.resolve([
        ("pprunner's defaults for Celery", DEFAULTS),
        ("the Celery worker's options", from_celery),
        ("the Celery config (pprunner_* keys)", from_conf),
        ("environment", from_env),
    ])
