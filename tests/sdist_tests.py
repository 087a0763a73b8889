"""A host's own tests, taken from its source distribution, for the suites that run them
with pprunner's worker swapped in (``tests/rq_suite``, ``tests/huey_suite``).

Only the tests are unpacked (never the host's package itself), so that an
``import`` of the host stays the installed release the tests belong to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def cache_folder(project: str, version: str, variable: str) -> Path:
    """Where ``project``'s tests of ``version`` are unpacked: ``$variable``, else the
    user's cache folder."""
    base = os.environ.get(variable) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "pprunner",
        f"{project}-tests")
    return Path(base) / f"{project}-{version}"


def fetch(project: str, version: str, tests: str, folder: Path, name: str) -> None:
    """Unpack the folder ``tests`` (a path inside the source tree) of ``project``'s
    source distribution as ``folder / name``, once."""
    if (folder / name).is_dir():
        return
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary",
                        ":all:", "--no-deps", "--dest", scratch, f"{project}=={version}"],
                       check=True)
        (archive,) = Path(scratch).glob(f"{project}-*.tar.gz")
        inside = f"{project}-{version}/{tests}"
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"{inside}/")]
            tar.extractall(unpacked, members=members, filter="data")
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.move(str(unpacked / inside), partial / name)
        partial.replace(folder)
