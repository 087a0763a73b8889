"""pprunner on its SQLite backend: a fresh database file per round.

Everything but the store is :class:`~.pprunner_common.PprunnerSystem`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .. import procs
from ..pools import free_port
from .pprunner_common import PprunnerSystem


class PprunnerSQLite(PprunnerSystem):
    name = "pprunner-sqlite"

    def fresh_backend(self, workdir: Path) -> str:
        # the round's folder is new and empty, and removed after the round
        self.database = workdir / "jobs.db"
        return f"sqlite:///{self.database}"

    def _release_app(self) -> None:
        """Also remove the database's doorbell folder, which pprunner leaves in
        the temp dir for every database."""
        backend = self.apps.app.backend
        folder = getattr(getattr(backend, "doorbell", None), "folder", None)
        super()._release_app()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


class PprunnerSQLiteMsgpack(PprunnerSQLite):
    """The same with msgpack: what the serializer changes in a whole run."""

    name = "pprunner-sqlite-msgpack"
    serializer = "msgpack"
    requires = ("pprunner", "msgpack")
    #: the serializer only encodes a task's arguments and result, which matters
    #: where 10,000 of them go through the store; one task at a time, an idle pool
    #: or a crash would measure pprunner-sqlite again
    only_scenarios = ("throughput",)


class PprunnerSQLiteMetrics(PprunnerSQLite):
    """The same with the Prometheus metrics plugin on (``PPRUNNER_METRICS_PORT``, a free
    loopback port): what metrics cost, against pprunner-sqlite (with ``--interleave``
    both see the same machine). Nothing scrapes it during a round; a scrape every
    15 s or so, as Prometheus makes, is a few milliseconds of the supervisor's."""

    name = "pprunner-sqlite-metrics"
    requires = ("pprunner", "prometheus_client")
    only_scenarios = ("throughput", "idle_cost")

    def _launch(self, *, burst: bool = False, **env: str) -> subprocess.Popen[bytes]:
        return super()._launch(burst=burst, PPRUNNER_METRICS_PORT=f"127.0.0.1:{free_port()}",
                               **env)


class PprunnerSQLiteSpawn(PprunnerSQLite):
    """The same with every worker a fresh interpreter (``PPRUNNER_START_METHOD=spawn``)
    instead of a fork of the template (the default): what the template changes in how
    soon a killed worker's slot serves again, in start-up and in an idle pool's cost."""

    name = "pprunner-sqlite-spawn"
    only_scenarios = ("throughput", "crash_recovery", "idle_cost")

    def _launch(self, *, burst: bool = False, **env: str) -> subprocess.Popen[bytes]:
        return super()._launch(burst=burst, PPRUNNER_START_METHOD="spawn", **env)


class PprunnerSQLiteSpare(PprunnerSQLite):
    """The same with one spare worker (``PPRUNNER_SPARE_WORKERS=1``): how soon a killed
    worker's slot serves again when a booted spare takes it, and what the spare costs
    an idle pool."""

    name = "pprunner-sqlite-spare"
    only_scenarios = ("crash_recovery", "idle_cost")

    def _launch(self, *, burst: bool = False, **env: str) -> subprocess.Popen[bytes]:
        return super()._launch(burst=burst, PPRUNNER_SPARE_WORKERS="1", **env)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Every slot's worker, and the spare, booted."""
        super()._wait_ready(timeout)
        procs.wait_until(lambda: any(procs.title(r.pid).startswith("pprunner worker spare: ")
                                     for r in self._workers().values()),
                         timeout, "the spare to boot")
