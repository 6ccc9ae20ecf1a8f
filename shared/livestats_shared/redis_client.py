"""One way to open a Redis client, so every process names itself and times out the same way."""

from __future__ import annotations

import re
from typing import Any

from redis.asyncio import Redis

# Errors that mean "Redis is not there right now" rather than "the command was wrong".
from redis.exceptions import (
    BusyLoadingError,
    ClusterError,
    ConnectionError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from . import sentinel
from .cluster import connect_cluster, is_cluster_url
from .compat import UnpolledPool

# On a Cluster also: CLUSTERDOWN and redirections that ran out (ClusterError; a failover in
# progress), TRYAGAIN (a slot half-migrated) and a slot the client's map has no node for yet.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
)
UNAVAILABLE: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, OSError)


def connect(url: str, client_name: str, *, single_connection: bool = False, busy_loop: bool = False) -> Redis:
    """A client for `url` (redis://, rediss://, with ACL user:password; redis+cluster:// for a
    Cluster, see cluster.py; redis+sentinel:// for a Sentinel-managed primary, see sentinel.py)
    named for CLIENT LIST.

    No socket_timeout, on purpose: with one set, redis-py 5 wraps every write in
    asyncio.wait_for, which on Python 3.11 swallows a cancellation that lands as the write
    completes (measured: ~8% of random cancels lost). A task that cannot be cancelled hangs
    shutdown and timeouts. Callers that need a bound use `asyncio.timeout` around the command.

    `single_connection`: one dedicated connection, for a blocking reader: its cancelled XREAD
    must never go back to a shared pool (redis-py #2663), and its CLIENT ID stays stable.

    `busy_loop`: for a process whose event loop is busy (the gateway): the pool hands out
    connections without redis-py's per-checkout socket poll (see `compat.UnpolledPool`).

    On a Cluster both flags are moot: each node has its own pool, which takes no lock and polls
    nothing, and a blocking reader asks `ClusterClient.dedicated_client` for its connection.
    """
    options: dict[str, Any] = {"client_name": client_name, "socket_connect_timeout": 5.0, "health_check_interval": 30}
    if is_cluster_url(url):
        return connect_cluster(url, options)
    if sentinel.is_sentinel_url(url):
        return sentinel.primary_client(url, options, single_connection=single_connection, busy_loop=busy_loop)
    if not busy_loop:
        client: Redis = Redis.from_url(url, single_connection_client=single_connection, **options)
        return client
    client = Redis(connection_pool=UnpolledPool.from_url(url, **options), single_connection_client=single_connection)
    client.auto_close_connection_pool = True  # aclose() closes the pool, as with from_url
    return client


_URL_PASSWORD = re.compile(r"(rediss?(?:\+\w+)?://[^:/@\s]*:)[^@\s]+@")  # also redis+cluster://, redis+sentinel://


def redact_url(text: str) -> str:
    """`text` with the password of every Redis URL in it masked: redis://user:***@host."""
    return _URL_PASSWORD.sub(r"\1***@", text)
