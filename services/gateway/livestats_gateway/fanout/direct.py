"""A WebSocket path below the framework for the streaming endpoints: uvicorn's sans-I/O WebSocket
protocol, plus a sink (fanout/subscriber.py, `Sink`) that puts complete frames straight on the
connection's transport.

Through ASGI, every frame of every client goes through Starlette's and uvicorn's `send`
(message dicts, a state check, text encoded, a frame built by websockets) from a sender task
woken per frame. A batch fanned out to 1,000 clients paid that 1,000 times. Here the batch is
framed once (wire.WS_WIRE) and the same bytes are written to each transport, by the hub's reader,
without a task switch. Everything else stays uvicorn's: the handshake, the app's `accept` and
`close` (still sent through ASGI, after the frames written here, in order), pings, reading.

A sink is offered only where a frame needs nothing per connection: not with per-message
compression (`LIVESTATS_GATEWAY_WS_COMPRESSION`), whose frames are compressed per client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

EXTENSION = "livestats.direct"  # the scope extension that holds the connection's sink


class DirectSink:
    """What a Subscriber writes to: this connection's transport, while it is open and below its
    high-water mark."""

    __slots__ = ("_protocol", "on_writable")

    def __init__(self, protocol: DirectProtocol) -> None:
        self._protocol = protocol
        self.on_writable: Callable[[], None] | None = None

    def ready(self) -> bool:
        p = self._protocol
        return p.handshake_complete and not p.paused and not p.close_sent and not p.transport.is_closing()

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)


class _Inbox:
    """uvicorn's receive queue (it uses put_nowait, get and empty), without asyncio.Queue's three
    deques and Event: an idle connection holds one of these for its whole life."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter  # shared if two wait: each looks again
        return self._items.pop(0)


class _Flag:
    """uvicorn's `writable` event (set, clear, wait), without asyncio.Event's deque."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = True
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class DirectProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol with a DirectSink in the scope's extensions, and
    a leaner receive queue and `writable` event (memory per idle connection)."""

    sink: DirectSink | None = None
    paused = False  # the transport's buffer is above its high-water mark

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)  # absent: handshake refused
        if scope is not None and not self.config.ws_per_message_deflate:
            self.sink = DirectSink(self)
            scope["extensions"][EXTENSION] = self.sink
        # Not needed after the handshake; each idle connection would keep its headers otherwise.
        self.request = None  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.response = None  # type: ignore[assignment]  # read only to accept; headers kept otherwise

    def pause_writing(self) -> None:
        self.paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        super().resume_writing()
        if self.sink is not None and self.sink.on_writable is not None:
            self.sink.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.sink is not None:
            self.sink.on_writable = None  # the subscriber's flush: no longer ours to call
