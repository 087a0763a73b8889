"""A host-consumed worker's job, written where its supervisor reads it after a death.

A host's consumer runs a job, and the supervisor needs to know which one only
in two cases: the job has a hard time limit (the supervisor keeps the
deadline), or the worker dies under it (the supervisor settles it). Reporting
every job's start and end over the pipe, for the second case, costs the worker
two writes and the supervisor two reads per job, measured at a fifth of a
fast host's throughput on two cores. So a job without a hard limit is written
to a small shared buffer instead (:class:`HeldJob`: a ``memfd`` the worker
and its supervisor both map), and cleared when it ends; memory that outlives
the process, which the supervisor reads when it reaps a dead worker.

A worker started where the descriptor cannot follow it (multiprocessing's
``spawn`` or ``forkserver``) gets none and reports over the pipe.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
from typing import Any

#: bytes for a job's id, name and data; a larger job is reported over the pipe
SIZE = 64 * 1024
#: the length of the held job's record, 0 while none is held; written after the record
_LENGTH = struct.Struct("<I")


def supported() -> bool:
    """Whether this platform has anonymous memory files (Linux)."""
    return hasattr(os, "memfd_create")


class HeldJob:
    """The job a worker holds: written by the worker, read by its supervisor.

    Only the worker writes; the supervisor reads once the worker is dead, or to ask
    whether it is busy (a length read at any time is a whole one, 4 aligned bytes).
    """

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("pprunner-held-job", 0)
            os.ftruncate(fd, SIZE)
        self.fd = fd
        self._memory = mmap.mmap(fd, SIZE)

    def __reduce__(self) -> Any:
        """A start method that pickles the spec cannot carry the memory: the worker
        gets None and reports over the pipe (:mod:`pprunner.launch` passes the
        descriptor itself)."""
        return _unavailable, ()

    def hold(self, job_id: str, name: str, data: Any) -> bool:
        """Record the job this worker runs now; False when it does not fit."""
        record = pickle.dumps((job_id, name, data), pickle.HIGHEST_PROTOCOL)
        if len(record) > SIZE - _LENGTH.size:
            return False
        self._memory[_LENGTH.size:_LENGTH.size + len(record)] = record
        _LENGTH.pack_into(self._memory, 0, len(record))  # last: the record is whole
        return True

    def release(self) -> None:
        """The job ended: nothing is held."""
        _LENGTH.pack_into(self._memory, 0, 0)

    @property
    def holding(self) -> bool:
        return _LENGTH.unpack_from(self._memory)[0] > 0

    def read(self) -> tuple[str, str, Any] | None:
        """The held job's id, name and data, if one is held."""
        (length,) = _LENGTH.unpack_from(self._memory)
        if not length:
            return None
        job_id, name, data = pickle.loads(self._memory[_LENGTH.size:_LENGTH.size + length])
        return job_id, name, data

    def close(self) -> None:
        self._memory.close()
        os.close(self.fd)


def _unavailable() -> None:
    return None
