"""Invocations as the Redis backend stores them: a hash per invocation, and the
flat ``[field, value, ...]`` lists that commands take and Lua scripts return.

A field that is None (or an empty list) is absent from the hash, so a change
that clears a field deletes it. Floats are written with ``repr``, which reads
back exactly.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from pprunner.invocation import OWNED_STATUSES, ErrorInfo, Invocation, Status, sources_of

#: per new status: the owned statuses it may be entered from, as ``change`` takes them
ALLOWED = {new: ",".join(sorted(s.value for s in sources_of(new) & OWNED_STATUSES))
           for new in Status}


def fields_of(invocation: Invocation) -> dict[str, Any]:
    """The hash of an invocation; None fields (and empty lists) are absent."""
    i = invocation
    values: dict[str, Any] = {
        "id": i.id, "task": i.task, "serializer": i.serializer, "payload": i.payload,
        "status": i.status.value, "owner": i.owner, "attempts": i.attempts,
        "max_attempts": i.max_attempts, "enqueued_at": i.enqueued_at,
        "started_at": i.started_at, "finished_at": i.finished_at, "result": i.result,
        "error": i.error.to_json() if i.error else None, "not_before": i.not_before,
        "history": json.dumps([attrs.asdict(e) for e in i.history]) if i.history else None,
        "waiting_for": json.dumps(list(i.waiting_for)) if i.waiting_for else None,
        "headers": json.dumps(i.headers) if i.headers else None,
    }
    return {k: repr(v) if isinstance(v, float) else v for k, v in values.items()
            if v is not None}


def invocation_from(raw: dict[bytes, bytes]) -> Invocation:
    """An invocation from its hash as Redis gives it, bytes keys and values. It is
    on the path from a claim to the task's start, so it decodes only what is there."""
    get = raw.get
    error, history, waiting_for = get(b"error"), get(b"history"), get(b"waiting_for")
    headers = get(b"headers")
    return Invocation(
        id=raw[b"id"].decode(), task=raw[b"task"].decode(),
        serializer=raw[b"serializer"].decode(), payload=raw[b"payload"],
        status=Status(raw[b"status"].decode()), owner=_text(get(b"owner")),
        attempts=int(raw[b"attempts"]), max_attempts=int(raw[b"max_attempts"]),
        enqueued_at=float(raw[b"enqueued_at"]), started_at=_number(get(b"started_at")),
        finished_at=_number(get(b"finished_at")), result=get(b"result"),
        error=ErrorInfo.from_json(error.decode()) if error else None,
        not_before=_number(get(b"not_before")),
        history=tuple(ErrorInfo(**e) for e in json.loads(history)) if history else (),
        waiting_for=tuple(json.loads(waiting_for)) if waiting_for else (),
        headers=json.loads(headers) if headers else {})


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _number(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def flat(fields: dict[str, Any]) -> list[Any]:
    """A mapping -> a flat [field, value, ...], as commands and scripts take it."""
    return [x for pair in fields.items() for x in pair]


def pairs(raw: list[bytes], start: int = 0) -> dict[bytes, bytes]:
    """A flat [field, value, ...] from ``start`` on, as a Lua script returns a hash -> a dict."""
    return dict(zip(raw[start::2], raw[start + 1::2], strict=True))


def inbox_entry(reply: Any) -> list[bytes] | None:
    """XREAD's reply for one stream and one entry -> [entry id, field, value, ...],
    or None when it timed out. RESP3 answers a map of streams, RESP2 a list."""
    if not reply:
        return None
    (_, entries), = reply.items() if isinstance(reply, dict) else reply
    (entry_id, fields), = entries
    return [entry_id, *fields]
