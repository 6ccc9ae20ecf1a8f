"""(c) A gateway built on `broadcaster` (PyPI) with its Redis streams backend, as its README
shows: one Broadcast per process, each client subscribes to the run's channel and gets every
message as a frame. Publishers call `Broadcast.publish` (one XADD per message) on the same
channel name: see bench/feed.py. broadcaster has no history: a late joiner sees live events only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .common import REDIS_URL, until_client_leaves

broadcast = Broadcast(REDIS_URL.replace("redis://", "redis-stream://", 1))
# broadcaster 0.3.1 loses subscribers when two clients subscribe to a new channel at once (the
# second replaces the first's subscriber set while the first awaits the backend): subscribing
# one at a time avoids that, at no cost to delivery.
_subscribing = asyncio.Lock()


def channel(run_id: str) -> str:
    return f"bench:broadcaster:{run_id}"


async def run_socket(websocket: WebSocket) -> None:
    run_id = websocket.path_params["run_id"]
    await websocket.accept()
    await until_client_leaves(websocket, _relay(websocket, channel(run_id)))


async def _relay(websocket: WebSocket, name: str) -> None:
    async with AsyncExitStack() as stack:
        async with _subscribing:
            subscriber = await stack.enter_async_context(broadcast.subscribe(name))
        async for event in subscriber:
            # The message is one event envelope; framed like livestats' batches for the client.
            await websocket.send_text('{"type":"events","events":[' + event.message + "]}")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with broadcast:
        yield


app = Starlette(routes=[WebSocketRoute("/ws/runs/{run_id}", run_socket)], lifespan=lifespan)
