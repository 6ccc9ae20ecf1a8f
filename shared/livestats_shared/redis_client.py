"""One way to open a Redis client, so every process names itself and times out the same way."""

from __future__ import annotations

from redis.asyncio import Redis

# Errors that mean "Redis is not there right now" rather than "the command was wrong".
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, BusyLoadingError)
UNAVAILABLE: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, OSError)


def connect(url: str, client_name: str, *, socket_timeout: float | None = 10.0) -> Redis:
    """A client for `url` (redis://, rediss://, with ACL user:password) named for CLIENT LIST."""
    client: Redis = Redis.from_url(
        url,
        client_name=client_name,
        socket_connect_timeout=5.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
    )
    return client
