"""(a) The status-polling design our users had: each connection reads the run's status snapshot
once a second and sends it when its hash changed. The snapshot is livestats' own stats hash, so
it is the same data a livestats client gets, only late and without the events."""

from __future__ import annotations

import asyncio
import hashlib

import orjson
from livestats_shared import keys
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .common import REDIS_URL, until_client_leaves

POLL_S = 1.0
redis = Redis.from_url(REDIS_URL, decode_responses=True)


async def run_socket(websocket: WebSocket) -> None:
    run_id = websocket.path_params["run_id"]
    await websocket.accept()
    await until_client_leaves(websocket, _poll(websocket, keys.run_stats(run_id)))


async def _poll(websocket: WebSocket, key: str) -> None:
    last_hash = b""
    while True:
        snapshot = await redis.hgetall(key)
        body = orjson.dumps({"type": "snapshot", "snapshot": snapshot}, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha1(body).digest()
        if digest != last_hash:
            last_hash = digest
            await websocket.send_text(body.decode())
        await asyncio.sleep(POLL_S)


app = Starlette(routes=[WebSocketRoute("/ws/runs/{run_id}", run_socket)])
