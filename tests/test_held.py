"""The held-job memory (:mod:`pprunner.held`): a host-consumed worker records the job it
runs without a hard limit there, instead of reporting it over the pipe, and its
supervisor reads it after the worker died (the deaths themselves:
tests/test_host_consumed.py)."""

from __future__ import annotations

import multiprocessing
import pickle
from typing import Any

import pytest

from pprunner import channel, held
from pprunner.consuming import HostJobs
from pprunner.held import HeldJob
from pprunner.worker import Supervision

pytestmark = pytest.mark.skipif(not held.supported(), reason="no memfd_create here")


def _hold_and_exit(memory: HeldJob) -> None:
    memory.hold("job-1", "tasks.add", {"args": [1, 2]})


def test_a_job_held_by_a_process_that_exited_is_read_by_its_parent() -> None:
    memory = HeldJob()
    try:
        child = multiprocessing.get_context("fork").Process(target=_hold_and_exit,
                                                            args=(memory,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert memory.holding
        assert memory.read() == ("job-1", "tasks.add", {"args": [1, 2]})
        memory.release()
        assert memory.read() is None and not memory.holding
    finally:
        memory.close()


def test_a_job_too_large_to_hold_is_refused_and_nothing_is_held() -> None:
    memory = HeldJob()
    try:
        assert not memory.hold("job-1", "tasks.big", b"x" * held.SIZE)
        assert memory.read() is None
    finally:
        memory.close()


def test_a_start_method_that_pickles_the_spec_gets_no_memory() -> None:
    memory = HeldJob()
    try:
        assert pickle.loads(pickle.dumps(memory)) is None
    finally:
        memory.close()


class _Sent:
    """A worker channel that keeps what it was given to send."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, message: Any) -> None:
        self.messages.append(message)


def test_only_jobs_without_a_hard_limit_and_one_at_a_time_are_recorded() -> None:
    memory = HeldJob()
    sent = _Sent()
    jobs = HostJobs(1, Supervision(sent), held=memory)  # type: ignore[arg-type]
    try:
        jobs.started("a", "tasks.a", data="message a")  # recorded, not reported
        jobs.started("b", "tasks.b", data="message b")  # another thread's: reported
        jobs.started("c", "tasks.c", time_limit=5.0, data="message c")  # a deadline: reported
        assert [type(m) for m in sent.messages] == [channel.Started, channel.Started]
        assert [m.job_id for m in sent.messages] == ["b", "c"]
        assert memory.read() == ("a", "tasks.a", "message a")

        del sent.messages[:]
        for job_id in "abc":
            jobs.finished(job_id)
        assert memory.read() is None
        # a recorded job's end is told only with a new peak of memory: the first is one
        assert [m.job_id for m in sent.messages] == ["a", "b", "c"]
        del sent.messages[:]
        jobs.started("d", "tasks.d", data="message d")
        jobs.finished("d")
        assert sent.messages == []
    finally:
        memory.close()
