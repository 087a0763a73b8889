"""Counts of jobs by task, one file per process, summed by the supervisor when scraped.

Every process that runs or sees jobs — each pull-mode worker, and the
supervisor itself — adds to a file of its own in the supervisor's metrics
folder (:func:`folder_of`). The file is memory-mapped, so an addition is a
store into shared memory: about a microsecond, no message to anyone, no
lock shared between processes, and it survives its process being SIGKILLed
the next moment. The supervisor reads every file when it is scraped and, when
a worker has exited, folds that worker's file into its own (so the folder
holds one file per live process however often workers are replaced).

Why not prometheus_client's own multiprocess mode: it is switched on for a
whole process by ``PROMETHEUS_MULTIPROC_DIR`` before prometheus_client is
first imported, which in a worker happens when the app is imported, before
any hook runs; and it would take over the metrics the app's own code keeps.
Nor messages to the supervisor: one per job wakes the supervisor's loop for
every job and is lost with a killed worker unless it is sent at once.

The format (little-endian): 8 bytes, how many bytes are in use (written
after the record it covers, so a reader never sees half a record); then a
record per task: the task name's length (4 bytes), the name in UTF-8 padded
so the values start on an 8-byte boundary, and :data:`WIDTH` float64 values
(the ``FIELD`` indexes below; duration buckets are not cumulative).
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

from pprunner import runtime

#: upper bounds of the duration buckets, in seconds (a +Inf bucket follows)
DURATION_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0, 900.0, 3600.0)

# the values of a task's record, by index
ENQUEUED, STARTED, SUCCEEDED, FAILED, RETRIED, REROUTED, DURATION_SUM = range(7)
#: where the duration buckets start: one per bound, then +Inf
BUCKETS = 7
WIDTH = BUCKETS + len(DURATION_BOUNDS) + 1

#: the worker-side outcomes (``pprunner_attempt_ended``) that have a counter
OUTCOME_FIELDS = {"succeeded": SUCCEEDED, "failed": FAILED, "retried": RETRIED}

#: the runtime sub-folder that holds each supervisor's metrics folder
METRICS_FOLDER = "metrics"
#: the name of a worker's file is its runner id with this suffix
SUFFIX = ".tally"

_USED = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_VALUE = struct.Struct("<d")
_ROW = struct.Struct(f"<{WIDTH}d")
_INITIAL_SIZE = mmap.PAGESIZE

Table = dict[str, list[float]]


def folder_of(supervisor_id: str) -> Path:
    """Where a supervisor's processes keep their files (made by the supervisor)."""
    return runtime.top() / METRICS_FOLDER / supervisor_id


def bucket_of(bounds: tuple[float, ...], value: float) -> int:
    """The index of the (non-cumulative) bucket ``value`` falls in: the first bound
    it does not exceed, or ``len(bounds)`` for +Inf."""
    return bisect.bisect_left(bounds, value)


def _values_at(record_at: int, name_length: int) -> int:
    """Where a record's values start: after the length and the name, 8-aligned."""
    return record_at + (_LENGTH.size + name_length + 7) // 8 * 8


class Tally:
    """This process's file: counts by task, added to from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._size = _INITIAL_SIZE
        os.ftruncate(self._fd, self._size)
        self._map = mmap.mmap(self._fd, self._size)
        self._used = _USED.size
        self._map[:_USED.size] = _USED.pack(self._used)
        #: task -> (where its values are in the file, their current values)
        self._rows: dict[str, tuple[int, list[float]]] = {}
        self._lock = threading.Lock()

    def add(self, task: str, field: int, amount: float = 1.0) -> None:
        with self._lock:
            self._add(task, field, amount)

    def ended(self, task: str, field: int | None, seconds: float) -> None:
        """An attempt ended after ``seconds``: count it under ``field`` (None: under
        no counter) and in the duration histogram."""
        with self._lock:
            if field is not None:
                self._add(task, field, 1.0)
            self._add(task, DURATION_SUM, seconds)
            self._add(task, BUCKETS + bucket_of(DURATION_BOUNDS, seconds), 1.0)

    def merge(self, table: Table) -> None:
        """Add another process's counts (a worker that exited) to this file's."""
        with self._lock:
            for task, values in table.items():
                for field, amount in enumerate(values):
                    if amount:
                        self._add(task, field, amount)

    def close(self) -> None:
        with self._lock:
            self._map.close()
            os.close(self._fd)

    def _add(self, task: str, field: int, amount: float) -> None:
        row = self._rows.get(task)
        offset, values = row if row is not None else self._append(task)
        values[field] += amount
        at = offset + field * _VALUE.size
        self._map[at:at + _VALUE.size] = _VALUE.pack(values[field])

    def _append(self, task: str) -> tuple[int, list[float]]:
        name = task.encode()
        record_at = self._used
        offset = _values_at(record_at, len(name))
        end = offset + _ROW.size
        if end > self._size:
            self._grow(end)
        self._map[record_at:record_at + _LENGTH.size] = _LENGTH.pack(len(name))
        self._map[record_at + _LENGTH.size:record_at + _LENGTH.size + len(name)] = name
        self._used = end  # the values are zeros already: the file grows with zeros
        self._map[:_USED.size] = _USED.pack(end)
        row = self._rows[task] = (offset, [0.0] * WIDTH)
        return row

    def _grow(self, needed: int) -> None:
        while self._size < needed:
            self._size *= 2
        os.ftruncate(self._fd, self._size)
        self._map.close()
        self._map = mmap.mmap(self._fd, self._size)


def read(path: Path) -> Table:
    """One process's counts by task ({} for a file that is gone)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    if len(data) < _USED.size:
        return {}
    used = min(_USED.unpack_from(data)[0], len(data))
    table: Table = {}
    at = _USED.size
    while at + _LENGTH.size <= used:
        (length,) = _LENGTH.unpack_from(data, at)
        offset = _values_at(at, length)
        if offset + _ROW.size > used:
            break
        name = data[at + _LENGTH.size:at + _LENGTH.size + length].decode()
        table[name] = list(_ROW.unpack_from(data, offset))
        at = offset + _ROW.size
    return table


def combine(tables: Iterable[Table]) -> Table:
    """The sum of several processes' counts."""
    total: Table = {}
    for table in tables:
        for task, values in table.items():
            row = total.setdefault(task, [0.0] * WIDTH)
            for field, amount in enumerate(values):
                row[field] += amount
    return total


def files(folder: Path) -> list[Path]:
    """The tally files in a metrics folder."""
    return sorted(folder.glob(f"*{SUFFIX}"))
