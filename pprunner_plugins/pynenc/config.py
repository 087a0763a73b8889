"""pprunner's settings through pynenc's own configuration.

A pynenc app configures its runner with cistell: ``[tool.pynenc]`` in
``pyproject.toml``, a config file, ``config_values``, ``PYNENC__<KEY>``
variables. :class:`ConfigPprunnerRunner` extends PersistentProcessRunner's
configuration, so PPR's own keys keep their names and meaning
(``num_processes``: 0 is one per CPU; ``min_parallel_slots``;
``invocation_wait_results_sleep_time_sec``), and adds pprunner's as
``pprunner_<setting>`` keys (``pprunner_time_limit``,
``PYNENC__PPRUNNER_TIME_LIMIT``). The prefix keeps them from ever colliding
with a key pynenc adds later. cistell reads every key of this class in the
section of each class it derives from, so all of them work directly under
``[tool.pynenc]``, under ``[tool.pynenc.runner]`` (where pynenc's docs put
``num_processes``) and in the class's own ``[tool.pynenc.pprunnerrunner]``.
"""

from __future__ import annotations

import os
from typing import Any

from cistell import ConfigField
from pynenc.conf.config_runner import ConfigPersistentProcessRunner

from pprunner import config as config_module
from pprunner.config import Config
from pprunner.errors import ConfigError

#: pprunner settings a pynenc runner takes, with their defaults *as pynenc config
#: values*: cistell parses a value by its default's type, so "not set" is 0 here
SUPERVISOR_SETTINGS: dict[str, Any] = {
    "time_limit": 0.0,  # seconds; the worker is killed, the invocation fails (or retries)
    "soft_time_limit": 0.0,  # seconds; SoftTimeLimitExceeded raised in the task
    "max_tasks_per_child": 0,
    "max_tasks_jitter": 0,
    "max_memory_per_child": 0,  # MiB
    "boot_timeout": 60.0,
    "crash_loop_period": 60.0,
    "shutdown_timeout": 30.0,  # the "drain" stop's grace
    "heartbeat_interval": 1.0,
    "start_method": "template",
    "log_level": "INFO",
    "max_attempts": 3,  # deaths of a worker under one invocation before it fails
    "spare_workers": 0,  # workers booted ahead: a dead or lent slot is served at once
    "metrics_port": "",  # [HOST:]PORT of the Prometheus endpoint (pprunner[prometheus])
}

#: the runner's own settings (not pprunner's core ones)
RUNNER_SETTINGS: dict[str, Any] = {
    # what a stop does with running invocations: "reroute" (PPR's contract: kill the
    # workers now, KILLED then REROUTED) or "drain" (let them finish within
    # pprunner_shutdown_timeout, then reroute what is left)
    "stop": "reroute",
    # longest pause between two claims of the pool while the broker is empty (seconds;
    # each worker pauses up to this times the pool's size)
    "idle_poll_max": 0.05,
    # accepted for the configurations that set it, with no effect since a waiting
    # invocation's worker runs nothing nested (it lends its slot instead)
    "max_wait_depth": 8,
    # seconds a waiting invocation may wait before WaitTimeout is raised in it; 0: never
    "wait_timeout": 0.0,
}

STOP_MODES = ("reroute", "drain")
#: settings whose "not set" value (0, "") is pprunner's None
_OPTIONAL = {"time_limit", "soft_time_limit", "metrics_port"}

ConfigPprunnerRunner: Any = type("ConfigPprunnerRunner", (ConfigPersistentProcessRunner,), {
    "__doc__": __doc__,
    **{f"pprunner_{name}": ConfigField(default)
       for name, default in {**SUPERVISOR_SETTINGS, **RUNNER_SETTINGS}.items()},
})


def supervisor_config(conf: Any) -> Config:
    """pprunner's Config from a pynenc runner's configuration; a bad value is a
    one-line ConfigError naming the pynenc key."""
    values: dict[str, Any] = {
        name: getattr(conf, f"pprunner_{name}") for name in SUPERVISOR_SETTINGS}
    for name in _OPTIONAL:
        if values[name] in (0, 0.0, ""):
            values[name] = None
    values["processes"] = max(conf.min_parallel_slots, conf.num_processes or os.cpu_count() or 1)
    try:
        return config_module.resolve([("pynenc config (pprunner_<setting>, num_processes)",
                                       values)])
    except ConfigError as exc:
        raise ConfigError(f"{exc} (pynenc key pprunner_<setting>, "
                          f"e.g. PYNENC__PPRUNNER_TIME_LIMIT)") from None


def runner_setting(conf: Any, name: str) -> Any:
    """One of :data:`RUNNER_SETTINGS`, checked."""
    value = getattr(conf, f"pprunner_{name}")
    if name == "stop" and value not in STOP_MODES:
        raise ConfigError(f"pynenc setting pprunner_stop: expected one of "
                          f"{', '.join(STOP_MODES)}, got {value!r}")
    if name != "stop" and float(value) < 0:
        raise ConfigError(f"pynenc setting pprunner_{name}: expected a number >= 0, "
                          f"got {value!r}")
    return value
