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


class DirectProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol with a DirectSink in the scope's extensions."""

    sink: DirectSink | None = None
    paused = False  # the transport's buffer is above its high-water mark

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)  # absent: handshake refused
        if scope is not None and not self.config.ws_per_message_deflate:
            self.sink = DirectSink(self)
            scope["extensions"][EXTENSION] = self.sink
        # Not needed after the handshake; each idle connection would keep its headers otherwise.
        self.request = None  # type: ignore[assignment]

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
