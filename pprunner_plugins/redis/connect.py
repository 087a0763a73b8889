"""From a backend URL to a redis-py client, whichever way the Redis is deployed.

``redis://``, ``rediss://`` (TLS), ``unix://``: one server, as redis-py reads them.

``redis+sentinel://[[user]:password@]s1:26379,s2:26379/mymaster[/db]``
(``rediss+sentinel://`` for TLS): the master Sentinel names ``mymaster``,
found again after every failover. The password, the TLS options in the query
(``ssl_ca_certs``, ``ssl_cert_reqs``...) and the timeouts are those of
``rediss://``; they apply to the master, and to the sentinels too, except
that ``sentinel_password`` (and ``sentinel_username``) in the query, when
given, are the sentinels' own.

``redis+cluster://[[user]:password@]n1:6379,n2:6379`` (``rediss+cluster://``
for TLS): a Redis Cluster, reached through any of the nodes named. Every key
of a namespace carries the prefix as its hash tag (``{NAME}:...``), so a
namespace lives in one slot (its scripts run on one node) and namespaces
spread over the cluster.

``redis+client://package.module:attribute``: a client or connection pool the
user built (``redis.Redis``, ``ConnectionPool``, or a callable returning one),
imported by every process that opens the backend, so each builds its own.

Every URL may end in ``?prefix=NAME`` (default ``pprunner``), the start of
every key. ``batch=N`` lets a worker claim up to N at once (:mod:`pprunner.batching`).
``wait_replicas=N`` makes each change wait until N replicas have
it (``WAIT``) before it counts; a Sentinel or Cluster URL waits for 1 unless
told 0.
"""

from __future__ import annotations

import importlib
import urllib.parse
from typing import Any

import attrs

from pprunner.batching import batch_limit
from pprunner.errors import BackendError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: deployments whose failover promotes a replica, which must have every change first
REPLICATED_SCHEMES = SENTINEL_SCHEMES + CLUSTER_SCHEMES
CLIENT_SCHEME = "redis+client"
#: the options of ours, taken out of the query before redis-py reads it
OWN_OPTIONS = ("prefix", "batch", "wait_replicas", "sentinel_password", "sentinel_username")


@attrs.frozen
class Connection:
    """What a backend needs from its URL: a client, the key prefix, how many
    replicas must have a change before it counts (0: do not wait), and whether
    the client is a cluster's (then the prefix is a hash tag)."""

    client: Any
    prefix: str
    wait_replicas: int
    cluster: bool = False
    #: the most invocations a worker claims at once (:mod:`pprunner.batching`)
    batch: int = 1


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
        elif scheme in CLUSTER_SCHEMES:
            client = _cluster(rest, redis, timeouts)
        elif scheme == CLIENT_SCHEME:
            client = _users_client(parts.netloc + parts.path, redis)
        else:
            client = redis.Redis.from_url(urllib.parse.urlunsplit(rest), **timeouts)
        replicas = int(own.get("wait_replicas", 1 if scheme in REPLICATED_SCHEMES else 0))
    except ValueError as exc:
        raise BackendError(f"bad Redis URL {url!r}: {exc}") from None
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        # a cluster client reads the cluster's slots as it is made
        raise BackendError(f"cannot reach Redis at {url}: {exc}") from None
    batch = batch_limit(own.get("batch", "1"), url)
    if scheme in CLUSTER_SCHEMES:
        return Connection(client, f"{{{prefix}}}", replicas, cluster=True, batch=batch)
    return Connection(client, prefix, replicas, batch=batch)


def async_connection(url: str, **timeouts: float) -> Any:
    """A ``redis.asyncio`` connection (not yet connected) to the server of a
    ``redis://``, ``rediss://`` or ``unix://`` URL; None for the other deployments
    (their waiters fall back to the core's helper thread)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss", "unix"):
        return None
    import redis.asyncio

    query = dict(urllib.parse.parse_qsl(parts.query))
    for name in OWN_OPTIONS:
        query.pop(name, None)
    rest = parts._replace(query=urllib.parse.urlencode(query))
    return redis.asyncio.ConnectionPool.from_url(urllib.parse.urlunsplit(rest),
                                                 **timeouts).make_connection()


def _sentinel_master(parts: urllib.parse.SplitResult, own: dict[str, str], redis: Any,
                     timeouts: dict[str, float]) -> Any:
    """A client of the master the sentinels in ``parts`` name; redis-py's
    Sentinel pool asks them again whenever a connection to it is made."""
    from redis.sentinel import Sentinel

    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL names the master: redis+sentinel://HOST:PORT,.../NAME/DB")
    service, db = path[0], path[1] if len(path) > 1 else "0"
    sentinels, options = _hosts_and_options(parts, redis, db, 26379)
    tls = options["ssl"]
    options.update(timeouts)
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


def _cluster(parts: urllib.parse.SplitResult, redis: Any, timeouts: dict[str, Any]) -> Any:
    """A cluster client that starts from the nodes in ``parts`` (one that answers
    is enough: it tells where the others are)."""
    from redis.cluster import ClusterNode, RedisCluster

    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only db 0")
    nodes, options = _hosts_and_options(parts, redis, "0", 6379)
    del options["db"]
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                        require_full_coverage=False, **options, **timeouts)


def _hosts_and_options(parts: urllib.parse.SplitResult, redis: Any, db: str,
                       default_port: int) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The ``host:port,...`` list of a URL, and its connection options as for
    ``redis://`` (``rediss://``: TLS), read by redis-py itself from a one-host URL
    of the same shape."""
    credentials, _, hosts = parts.netloc.rpartition("@")
    tls = parts.scheme.lower().startswith("rediss")
    single = f"{'rediss' if tls else 'redis'}://{credentials + '@' if credentials else ''}" \
             f"x/{db}?{parts.query}"
    options = redis.connection.parse_url(single)
    options.pop("host"), options.pop("connection_class", None)
    options["ssl"] = tls
    return [_host_and_port(h, default_port) for h in hosts.split(",") if h], options


def _host_and_port(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
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
