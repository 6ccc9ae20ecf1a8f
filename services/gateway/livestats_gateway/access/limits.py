"""Open streams (WebSocket and SSE) per principal, counted in this gateway process.

The count is per process, not cluster-wide: a principal behind N gateways may hold N times the
limit. That bounds what one token can pin in one process's memory, which is what the limit is
for, without a shared counter that a crashed gateway would leave wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from livestats_shared.errors import LivestatsError


class TooManyConnections(LivestatsError):
    def __init__(self, principal: str, limit: int) -> None:
        super().__init__(f"{principal} already holds {limit} open streams on this gateway; close one first")


class ConnectionLimiter:
    def __init__(self, per_principal: int) -> None:
        self.per_principal = per_principal
        self._open: Counter[str] = Counter()

    def open_for(self, principal: str) -> int:
        return self._open[principal]

    def acquire(self, principal: str, *, strict: bool = True) -> None:
        """Count one stream for `principal`; refuse beyond the limit (unless the caller checked
        it already and only counts). Every acquire is paired with one `release`."""
        if strict and self._open[principal] >= self.per_principal:
            raise TooManyConnections(principal, self.per_principal)
        self._open[principal] += 1

    def release(self, principal: str) -> None:
        self._open[principal] -= 1
        if not self._open[principal]:
            del self._open[principal]

    @contextmanager
    def hold(self, principal: str, *, strict: bool = True) -> Iterator[None]:
        """Count one stream for `principal` while the block runs (see `acquire`)."""
        self.acquire(principal, strict=strict)
        try:
            yield
        finally:
            self.release(principal)
