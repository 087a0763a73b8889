"""The pipe's messages: each travels as it was sent, and each has one receiver."""

from __future__ import annotations

import typing

import pytest

from pprunner import Supervisor, channel
from pprunner.jobs import Call, RemoteError
from tests import apps

#: one of each message, with values of the kinds they carry
SAMPLES: list[channel.Message] = [
    channel.Hello(), channel.Ready(1 << 20), channel.BootFailed("ImportError: no module"),
    channel.Started("inv1", "tests.apps.add", 2.5, True), channel.Finished("inv1", 1 << 21),
    channel.Recycle("max_tasks_per_child reached (3 jobs)", at_once=True),
    channel.Waiting(True), channel.Done("call1", False, RemoteError("E", "boom"), 0),
    channel.Unreadable(RemoteError("AttributeError", "cannot import `sq` from `__main__`")),
    channel.Note("call1", {"taken": ["a"]}), channel.CacheRequest(b"\x80"),
    channel.CacheAnswer(True, None), channel.Retire(), channel.Run(Call("c", print, (1,))),
    channel.Serve(2), channel.RedeliveryCheck("msg1"), channel.RedeliveryVerdict("msg1", True),
]

#: what only the supervisor sends; every other message is a worker's report
TO_WORKERS = {channel.CacheAnswer, channel.Retire, channel.Run, channel.Serve,
              channel.RedeliveryVerdict}


def test_samples_cover_every_message() -> None:
    assert {type(m) for m in SAMPLES} == set(channel.MESSAGES)
    assert set(typing.get_args(channel.Message)) == set(channel.MESSAGES)


@pytest.mark.parametrize("message", SAMPLES, ids=channel.kind)
def test_a_message_arrives_as_it_was_sent(message: channel.Message) -> None:
    received = channel.decode(channel.encode(message))
    assert type(received) is type(message)
    assert received._asdict().keys() == message._asdict().keys()
    assert repr(received) == repr(message)


def test_every_report_has_exactly_one_receiver_in_the_supervisor() -> None:
    supervisor = Supervisor(apps.app, processes=1)
    receivers = supervisor._receivers
    assert set(receivers) == set(channel.MESSAGES) - TO_WORKERS
    assert all(callable(r) for r in receivers.values())


def test_a_value_that_does_not_pickle_raises_before_anything_is_sent() -> None:
    with pytest.raises(Exception, match="pickle"):
        channel.encode(channel.Note("call1", lambda: None))
