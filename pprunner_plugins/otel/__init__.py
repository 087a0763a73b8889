"""OpenTelemetry traces: a span per job in the worker, a child of its producer's span.

Off unless the ``tracing`` setting is on (``tracing = true`` in ``[tool.pprunner]``,
``PPRUNNER_TRACING=1``, ``App(tracing=True)``). This module is the plugin the entry
point names, and it is only a switch: it implements ``pprunner_configure``, which
each process hears once, and registers the per-job hooks
(:mod:`pprunner_plugins.otel.tracing`) only when tracing is on. So tracing that is
off costs no hook call per job, and needs no OpenTelemetry installed; tracing that
is on without it is one ConfigError naming the extra (``pprunner[otel]``).

pprunner records spans through OpenTelemetry's API and configures no SDK: the
application installs a tracer provider and exporter, in every process that
should export (the producer, and each worker: the app module, which every
worker imports, or a ``pprunner_worker_init`` hook).
"""

from __future__ import annotations

from typing import Any

import pprunner
from pprunner.config import Config
from pprunner.errors import ConfigError
from pprunner.plugins import Plugins, install_extra

#: the name the per-job hooks are registered under while tracing is on
TRACING = "otel.tracing"


@pprunner.hookimpl
def pprunner_configure(config: Config, plugins: Plugins) -> None:
    manager = plugins.manager
    registered = manager.get_plugin(TRACING) is not None
    if config.tracing and not registered:
        manager.register(_tracing(), name=TRACING)
    elif registered and not config.tracing:
        manager.unregister(name=TRACING)


def _tracing() -> Any:
    try:
        from .tracing import Tracing
    except ImportError as exc:
        missing = exc.name or "opentelemetry-api"
        raise ConfigError(f"setting 'tracing' is on, but {missing} cannot be imported; "
                          f"install the extra: {install_extra('otel')}") from None
    return Tracing()
