"""The queue server's client for a command that enqueues, cancels or reads the schedule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from livestats_shared.redis_client import connect
from redis.asyncio import Redis

from .config import CliConfig


@asynccontextmanager
async def queue_client(redis: Redis, config: CliConfig) -> AsyncIterator[Redis]:
    """`redis` itself when the queue lives on the telemetry server (the default), else a client
    of LIVESTATS_QUEUE_REDIS_URL, closed on exit."""
    if config.queue_url == config.url:
        yield redis
        return
    queue = connect(config.queue_url, "livestats.cli.queue")
    try:
        yield queue
    finally:
        await queue.aclose()
