"""From a backend URL to a redis-py client, whichever way the Redis is deployed.

``redis://``, ``rediss://`` (TLS), ``unix://``: one server, as redis-py reads them.

``redis+sentinel://[[user]:password@]s1:26379,s2:26379/mymaster[/db]``
(``rediss+sentinel://`` for TLS): the master Sentinel names ``mymaster``,
found again after every failover. The password, the TLS options in the query
(``ssl_ca_certs``, ``ssl_cert_reqs``...) and the timeouts are those of
``rediss://``; they apply to the master, and to the sentinels too, except
that ``sentinel_password`` (and ``sentinel_username``) in the query, when
given, are the sentinels' own.

``redis+client://package.module:attribute``: a client or connection pool the
user built (``redis.Redis``, ``ConnectionPool``, or a callable returning one),
imported by every process that opens the backend, so each builds its own.

Every URL may end in ``?prefix=NAME`` (default ``pprunner``), the start of
every key. ``wait_replicas=N`` makes each change wait until N replicas have
it (``WAIT``) before it counts; a Sentinel URL waits for 1 unless told 0.
"""

from __future__ import annotations

import importlib
import urllib.parse
from typing import Any

import attrs

from pprunner.errors import BackendError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLIENT_SCHEME = "redis+client"
#: the options of ours, taken out of the query before redis-py reads it
OWN_OPTIONS = ("prefix", "wait_replicas", "sentinel_password", "sentinel_username")


@attrs.frozen
class Connection:
    """What a backend needs from its URL: a client, the key prefix, and how many
    replicas must have a change before it counts (0: do not wait)."""

    client: Any
    prefix: str
    wait_replicas: int


def connect(url: str, redis: Any, **timeouts: float) -> Connection:
    """The client for ``url``; ``timeouts`` are redis-py's ``socket_*`` options."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    own = {name: query.pop(name) for name in OWN_OPTIONS if name in query}
    prefix = own.get("prefix", "pprunner")
    if not prefix or any(c in prefix for c in " {}"):
        raise BackendError(f"bad Redis key prefix {prefix!r} in {url!r}")
    scheme = parts.scheme.lower()
    rest = parts._replace(query=urllib.parse.urlencode(query))
    try:
        if scheme in SENTINEL_SCHEMES:
            client = _sentinel_master(rest, own, redis, timeouts)
        elif scheme == CLIENT_SCHEME:
            client = _users_client(parts.netloc + parts.path, redis)
        else:
            client = redis.Redis.from_url(urllib.parse.urlunsplit(rest), **timeouts)
        replicas = int(own.get("wait_replicas", 1 if scheme in SENTINEL_SCHEMES else 0))
    except ValueError as exc:
        raise BackendError(f"bad Redis URL {url!r}: {exc}") from None
    return Connection(client, prefix, replicas)


def _sentinel_master(parts: urllib.parse.SplitResult, own: dict[str, str], redis: Any,
                     timeouts: dict[str, float]) -> Any:
    """A client of the master the sentinels in ``parts`` name; redis-py's
    Sentinel pool asks them again whenever a connection to it is made."""
    from redis.sentinel import Sentinel

    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL names the master: redis+sentinel://HOST:PORT,.../NAME/DB")
    service, db = path[0], path[1] if len(path) > 1 else "0"
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = [_host_and_port(h) for h in hosts.split(",") if h]
    tls = parts.scheme.lower().startswith("rediss")
    # rediss://'s options, read by redis-py itself from a one-host URL of the same shape
    single = f"{'rediss' if tls else 'redis'}://{credentials + '@' if credentials else ''}" \
             f"x/{db}?{parts.query}"
    options = redis.connection.parse_url(single)
    options.pop("host"), options.pop("connection_class", None)
    options.update(timeouts, ssl=tls)
    sentinel_options = {k: v for k, v in options.items() if k not in ("db", "ssl")}
    sentinel_options.update(ssl=tls, password=own.get("sentinel_password",
                                                     options.get("password")))
    if "sentinel_username" in own:
        sentinel_options["username"] = own["sentinel_username"]
    if not tls:
        sentinel_options = {k: v for k, v in sentinel_options.items()
                            if not k.startswith("ssl_")}
    return Sentinel(sentinels, sentinel_kwargs=sentinel_options).master_for(
        service, redis_class=redis.Redis, **options)


def _host_and_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, 26379
    return host.strip("[]"), int(port)


def _users_client(reference: str, redis: Any) -> Any:
    """``package.module:attribute`` -> the client it names (or a client of the pool
    it names, or of what it returns when called)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError("redis+client:// names a client: redis+client://package.module:name")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"cannot import the Redis client {reference!r}: {exc}") from None
    if callable(found) and not isinstance(found, (redis.Redis, redis.ConnectionPool)):
        found = found()
    if isinstance(found, redis.ConnectionPool):
        return redis.Redis(connection_pool=found)
    if not isinstance(found, redis.Redis):
        raise BackendError(f"{reference!r} is {type(found).__name__}, not a redis.Redis "
                           "client or ConnectionPool")
    if found.connection_pool.connection_kwargs.get("decode_responses"):
        raise BackendError(f"{reference!r} decodes replies (decode_responses=True); "
                           "pprunner stores payloads as bytes and needs a client that does not")
    return found
