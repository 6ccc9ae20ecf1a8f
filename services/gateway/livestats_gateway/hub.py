"""PLACEHOLDER (being written): the shared stream reader."""

from __future__ import annotations

from redis.asyncio import Redis

from .config import GatewayConfig


class Hub:
    def __init__(self, config: GatewayConfig, redis: Redis) -> None:
        self.config = config

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def alive(self) -> bool:
        """The reader loop is running (for /readyz)."""
        return True
