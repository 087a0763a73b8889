"""``celery pprunner``, and ``--pool pprunner``.

Celery's command line loads every entry point of the ``celery.commands``
group before it parses its arguments: loading this module, named there by
pprunner's ``pyproject.toml``, is the moment to add ``pprunner`` to the pool
names ``--pool`` and the ``worker_pool`` setting accept. Where that cannot
be done (a Celery whose ``worker`` command is built differently), ``--pool
pprunner`` fails with Click's own "not one of" message, ``celery pprunner``
says why, and ``--pool custom`` still works.

The command shows pprunner's settings as a worker of this app resolves them
(Celery config, then ``PPRUNNER_*`` environment), or the one line a worker
would stop with on a bad one. It imports no more than Celery's command line
has: ``celery inspect`` and friends start no slower for it.
"""

from __future__ import annotations

from typing import Any

import click
from celery import concurrency
from celery.bin.base import CeleryCommand

#: the pool name this module registers, and what it names
ALIAS = "pprunner"
POOL = "pprunner_plugins.celery:TaskPool"


def register_pool_alias() -> str | None:
    """Make ``--pool pprunner`` and ``worker_pool = "pprunner"`` name pprunner's pool.
    Returns None, or why ``--pool`` could not be taught the name."""
    concurrency.ALIASES.setdefault(ALIAS, POOL)  # what worker_pool and --pool resolve by
    try:
        from celery.bin.worker import worker

        # --pool's choices were fixed when Celery's worker command was defined
        pool_type = next(p for p in worker.params if p.name == "pool").type
        if ALIAS not in pool_type.choices:
            pool_type.choices = (*pool_type.choices, ALIAS)
    except Exception as exc:  # a worker command of another shape: say so, no traceback
        return (f"this Celery's worker command could not be given --pool {ALIAS} "
                f"({type(exc).__name__}: {exc}); use CELERY_CUSTOM_WORKER_POOL={POOL} "
                f"with --pool custom")
    return None


#: why ``--pool pprunner`` is not available, if it is not
ALIAS_PROBLEM = register_pool_alias()


@click.command(cls=CeleryCommand, name="pprunner")
@click.pass_context
def pprunner(ctx: click.Context) -> None:
    """Show pprunner's pool settings for this app (and check them)."""
    from pprunner.errors import ConfigError

    from . import settings

    context: Any = ctx.obj
    try:
        config = settings.resolve({}, context.app.conf)
    except ConfigError as exc:
        context.error(f"pprunner: {exc}")
        ctx.exit(1)
    if ALIAS_PROBLEM is None:
        context.echo(f"pool: celery -A {context.app.main} worker --pool {ALIAS}")
    else:
        context.error(f"pool: {ALIAS_PROBLEM}")
    for name, meaning in settings.SETTINGS.items():
        context.echo(f"{settings.PREFIX}{name} = {getattr(config, name)!r}  # {meaning}")
