"""A publisher for plain threads and sync code.

The old system called `loop.create_task` from sync callbacks on a loop that was not running
in that thread, and the work silently never happened. Here the publisher owns its own loop in
its own thread; sync callers hand work across with `run_coroutine_threadsafe` and get the
result or the exception back.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..events import EventData
from ..redis_client import connect
from .publisher import Published, Publisher


class SyncPublisher:
    """Thread-safe facade. Use as a context manager, or call `close()`."""

    def __init__(self, redis_url: str, *, client_name: str = "livestats.publisher", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="livestats-publisher", daemon=True)
        self._thread.start()
        self._publisher: Publisher = self._call(self._open(redis_url, client_name, options), timeout_s=10)

    async def _open(self, url: str, client_name: str, options: dict[str, Any]) -> Publisher:
        return await Publisher(connect(url, client_name), **options).start()

    def _call(self, coro: Any, timeout_s: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def emit(self, run_id: str, data: EventData, *, ts: int | None = None) -> None:
        """Queue without waiting; raises OutboxFull if Redis has been away for too long."""
        self._publisher.emit(run_id, data, ts=ts)

    def publish(
        self, run_id: str, data: EventData, *, guard: tuple[str, ...] = (), timeout_s: float = 10.0
    ) -> Published:
        """Write and wait; raises PublishError or RunStateConflict."""
        result: Published = self._call(
            self._publisher.publish(run_id, data, guard=guard, timeout_s=timeout_s), timeout_s + 1
        )
        return result

    def flush(self, timeout_s: float = 5.0) -> bool:
        flushed: bool = self._call(self._publisher.flush(timeout_s), timeout_s + 1)
        return flushed

    def close(self, flush_timeout_s: float = 5.0) -> None:
        if not self._loop.is_running():
            return
        self._call(self._shutdown(flush_timeout_s), flush_timeout_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self, flush_timeout_s: float) -> None:
        await self._publisher.close(flush_timeout_s)
        await self._publisher.redis.aclose()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
