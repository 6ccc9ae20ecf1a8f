"""PLACEHOLDER (being written): the live run index."""

from __future__ import annotations

from redis.asyncio import Redis

from .config import GatewayConfig
from .hub import Hub


class RunIndex:
    def __init__(self, config: GatewayConfig, redis: Redis, hub: Hub) -> None:
        self.config = config

    async def __aenter__(self) -> RunIndex:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
