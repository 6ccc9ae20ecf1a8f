"""Expensive reads per principal, bounded in this gateway process: one principal's many replays
(or list queries) wait for each other instead of crowding out everyone else's requests.

Per process, like `limits.ConnectionLimiter`: N gateways allow N times as many, which bounds
what one principal costs each process, the thing that raised other users' latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PerPrincipal:
    """A semaphore of `limit` per principal, created on first use and dropped when idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: dict[str, tuple[asyncio.Semaphore, int]] = {}  # principal -> (gate, holders + waiters)
        self.waited = 0  # acquisitions that had to wait (tests, logs)

    @asynccontextmanager
    async def hold(self, principal: str) -> AsyncIterator[None]:
        gate, users = self._gates.get(principal, (asyncio.Semaphore(self.limit), 0))
        self._gates[principal] = (gate, users + 1)
        try:
            if gate.locked():
                self.waited += 1
            async with gate:
                yield
        finally:
            gate, users = self._gates[principal]
            if users == 1:
                del self._gates[principal]
            else:
                self._gates[principal] = (gate, users - 1)
