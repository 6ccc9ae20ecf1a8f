"""(b) A gateway doing one blocking XREAD per client: replay the history with XRANGE, then
block on the run's stream from the last id seen, on a connection of the client's own, and
encode what comes back for that client alone."""

from __future__ import annotations

import orjson
from livestats_shared import keys
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from .common import REDIS_URL, until_client_leaves

PAGE = 2_000
# Every client holds a connection while it blocks: the pool must be as large as the audience.
redis = Redis(connection_pool=BlockingConnectionPool.from_url(REDIS_URL, max_connections=5_000, timeout=60))


def _frame(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> str:
    events = [
        {
            "v": int(f[b"v"]),
            "type": f[b"type"].decode(),
            "run_id": f[b"run_id"].decode(),
            "seq": int(f[b"seq"]),
            "ts": int(f[b"ts"]),
            "data": orjson.loads(f[b"data"]),
            "id": eid.decode(),
        }
        for eid, f in entries
    ]
    return orjson.dumps({"type": "events", "events": events}).decode()


async def run_socket(websocket: WebSocket) -> None:
    run_id = websocket.path_params["run_id"]
    await websocket.accept()
    await until_client_leaves(websocket, _stream(websocket, keys.run_events(run_id)))


async def _stream(websocket: WebSocket, stream: str) -> None:
    last = "0-0"
    while entries := await redis.xrange(stream, min="(" + last if last != "0-0" else "-", count=PAGE):
        await websocket.send_text(_frame(entries))
        last = entries[-1][0].decode()
        if len(entries) < PAGE:
            break
    await websocket.send_text(orjson.dumps({"type": "live", "last_id": last}).decode())
    while True:
        reply = await redis.xread({stream: last}, count=1_000, block=5_000)
        for _stream_name, entries in reply:
            await websocket.send_text(_frame(entries))
            last = entries[-1][0].decode()


app = Starlette(routes=[WebSocketRoute("/ws/runs/{run_id}", run_socket)])
