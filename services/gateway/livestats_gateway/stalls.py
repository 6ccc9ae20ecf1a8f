"""PLACEHOLDER (being written): stalled-run detection."""

from __future__ import annotations

from livestats_shared.publish import Publisher
from redis.asyncio import Redis

from .config import GatewayConfig


class StallMonitor:
    def __init__(self, config: GatewayConfig, redis: Redis, publisher: Publisher) -> None:
        self.config = config

    async def __aenter__(self) -> StallMonitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
