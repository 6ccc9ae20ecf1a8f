"""The database's key layout, checked before the gateway serves (livestats_shared.layout).

At start it is checked once: a refusal (layout 1 keys, a migration under way, another partition
count) stops the start, since the gateway would serve none of the runs there. With Redis away the
gateway starts all the same, not ready (/readyz says why, as for any outage), and checks in the
background until Redis answers; a refusal then keeps it not ready and is logged as an error.
"""

from __future__ import annotations

import asyncio
import logging

from livestats_shared import layout
from livestats_shared.redis_client import UNAVAILABLE
from redis.asyncio import Redis

from .background import BackgroundTasks, Backoff

log = logging.getLogger("livestats.gateway")
CHECK_TIMEOUT_S = 10.0  # the first check's bound: past it the gateway starts and checks again later
_NOT_ANSWERED: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)


class LayoutCheck:
    """An async context manager: the first check on enter, later ones in a background task."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.verified = False
        self.refused: str | None = None
        self._tasks = BackgroundTasks(log, "the key layout is never checked: the gateway stays not ready")

    async def __aenter__(self) -> LayoutCheck:
        try:
            await self._check()  # a LayoutError stops the start
        except _NOT_ANSWERED as exc:
            log.warning("key layout not checked yet, Redis unavailable (%s: %s)", type(exc).__name__, exc)
            self._tasks.start(self._until_checked(), "layout-check")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.stop()

    def not_ready(self) -> str | None:
        """Why the gateway must not serve yet, or None (for /readyz)."""
        if self.refused is not None:
            return f"key layout refused: {self.refused}"
        if not self.verified:
            return "key layout not checked yet (Redis was unavailable)"
        return None

    async def _check(self) -> None:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            found = await layout.ensure(self.redis)
        self.verified = True
        log.info("key layout %d, %d partitions", found.version, found.partitions)

    async def _until_checked(self) -> None:
        backoff = Backoff(first_s=0.2, most_s=5.0)
        while True:
            await backoff.wait()
            try:
                await self._check()
            except _NOT_ANSWERED:
                continue
            except layout.LayoutError as exc:
                self.refused = str(exc)
                log.error("this gateway cannot serve this database: %s", exc)
            return
