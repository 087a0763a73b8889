"""runner_cache: the supervisor's store and a worker's view of it, without processes
(the shared-between-workers test is in test_supervisor.py)."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from pprunner import channel
from pprunner.cache import CacheStore, RunnerCache
from pprunner.channel import WorkerChannel
from pprunner.errors import PprunnerError


@pytest.fixture
def cache() -> RunnerCache:
    return RunnerCache(CacheStore().answer)


def test_the_cache_behaves_as_a_dict(cache: RunnerCache) -> None:
    cache["a"] = [1, 2]
    cache.update({"b": 2}, c=3)
    assert cache["a"] == [1, 2] and "b" in cache and "z" not in cache and len(cache) == 3
    assert cache.get("z") is None and cache.get("z", 7) == 7
    assert cache.setdefault("b", 99) == 2 and cache.setdefault("d", 4) == 4
    assert sorted(cache) == ["a", "b", "c", "d"] and sorted(cache.values(), key=str) == [
        2, 3, 4, [1, 2]]
    assert cache.copy() == {"a": [1, 2], "b": 2, "c": 3, "d": 4} == dict(cache.items())
    assert cache.pop("d") == 4 and cache.pop("d", None) is None
    del cache["c"]
    with pytest.raises(KeyError):
        cache["c"]
    with pytest.raises(KeyError):
        del cache["c"]
    with pytest.raises(KeyError):
        cache.pop("c")
    assert cache.popitem() in [("a", [1, 2]), ("b", 2)]
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(KeyError):
        cache.popitem()


class OnlyInWorkers:
    """Stands for a value of a class the supervisor's process cannot import."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_unimportable, ())


def _unimportable() -> None:
    raise ImportError("no such module in this process")


def test_values_are_kept_unread_and_a_bad_key_fails_only_its_request() -> None:
    store = CacheStore()
    worker_view = RunnerCache(store.answer)
    worker_view["v"] = OnlyInWorkers()  # the store never unpickles it
    assert len(worker_view) == 1
    with pytest.raises(ImportError):  # the worker's own unpickling sees the real error
        worker_view["v"]
    with pytest.raises(PprunnerError, match="could not carry out the request: ImportError"):
        worker_view[OnlyInWorkers()] = 1
    assert worker_view.keys() == ["v"]


def test_what_the_supervisor_sends_during_a_request_is_kept_in_order() -> None:
    worker_end, supervisor_end = multiprocessing.Pipe()
    store = CacheStore()

    def supervisor() -> None:
        message = channel.decode(supervisor_end.recv_bytes())
        assert isinstance(message, channel.CacheRequest)
        supervisor_end.send_bytes(channel.encode(channel.Retire()))  # crosses the request
        supervisor_end.send_bytes(channel.encode(
            channel.CacheAnswer(*store.answer(message.request))))

    thread = threading.Thread(target=supervisor)
    thread.start()
    reports = WorkerChannel(worker_end)
    try:
        RunnerCache(reports.ask_cache)["k"] = "v"
        thread.join(timeout=10)
        assert isinstance(reports.receive(), channel.Retire)
        assert reports.receive() is None
        assert RunnerCache(store.answer)["k"] == "v"
    finally:
        worker_end.close()
        supervisor_end.close()


def test_a_request_to_a_gone_supervisor_raises() -> None:
    worker_end, supervisor_end = multiprocessing.Pipe()
    supervisor_end.close()
    try:
        with pytest.raises(PprunnerError, match="the supervisor is gone"):
            RunnerCache(WorkerChannel(worker_end).ask_cache).get("k")
    finally:
        worker_end.close()
