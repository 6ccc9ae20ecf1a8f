"""What the alternative apps share: the Redis URL, and ending a session when the client leaves."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

from starlette.websockets import WebSocket

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def until_client_leaves(websocket: WebSocket, sending: Coroutine[Any, Any, None]) -> None:
    """Run `sending` until it fails or the client disconnects, whichever is first."""

    async def receive() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(sending), asyncio.create_task(receive())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None and not _gone(task.exception()):
            raise task.exception()  # type: ignore[misc]


def _gone(exc: BaseException | None) -> bool:
    """The client went away mid-send: the normal end of a session here."""
    from starlette.websockets import WebSocketDisconnect

    return isinstance(exc, WebSocketDisconnect | OSError | RuntimeError)
