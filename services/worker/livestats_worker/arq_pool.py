"""arq's Redis pool, named for CLIENT LIST.

arq 0.28's `RedisSettings` has no `client_name` and its `create_pool` passes a fixed set of
options to the client, so the worker's own arq connections (the poll loop's and the one its
jobs and metrics tick borrow) showed up blank in CLIENT LIST. We build the same `ArqRedis`
from the URL ourselves, with a name, and hand it to the worker before arq would create one.
Building from the URL also keeps rediss:// query options (ssl_ca_certs=...) that arq's
`RedisSettings.from_dsn` drops, so every client of the process reads the URL the same way
(redis+sentinel:// included).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.connections import ArqRedis
from livestats_shared import sentinel
from livestats_shared.redis_client import REDIS_UNAVAILABLE, UNAVAILABLE
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

log = logging.getLogger("livestats.worker")

ARQ_CLIENT_NAME = "livestats.worker.arq"
_CONNECT_ATTEMPTS = 6  # as arq's create_pool: 1 + conn_retries (5), a second apart
_CONNECT_RETRY_DELAY_S = 1.0


async def create_named_pool(url: str, queue_name: str, client_name: str = ARQ_CLIENT_NAME) -> ArqRedis:
    """An `ArqRedis` for `url` whose every connection carries `client_name`; pinged once,
    retried like arq's own `create_pool` while Redis is not there yet."""
    attempt = 1
    while True:
        options: dict[str, Any] = {
            "client_name": client_name,
            "socket_connect_timeout": 5.0,
            # Let the client ride out short blips itself (server restart, failover) before a
            # command fails; the poll loop survives longer outages (ResilientWorker).
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=10),
            "retry_on_error": list(REDIS_UNAVAILABLE),
        }
        if sentinel.is_sentinel_url(url):
            pool = sentinel.primary_client(url, options, redis_class=ArqRedis)
        else:
            pool = ArqRedis.from_url(url, **options)
        pool.default_queue_name = queue_name
        try:
            await pool.ping()
            return pool
        except UNAVAILABLE as exc:
            await pool.aclose()
            if attempt == _CONNECT_ATTEMPTS:
                raise
            left = _CONNECT_ATTEMPTS - attempt
            log.warning("Redis not reachable (%s: %s); retrying (%d left)", type(exc).__name__, exc, left)
        attempt += 1
        await asyncio.sleep(_CONNECT_RETRY_DELAY_S)
