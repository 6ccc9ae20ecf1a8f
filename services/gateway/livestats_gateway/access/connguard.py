"""Connection limits uvicorn does not have: header and body timeouts, and a cap on connections.

Measured on uvicorn 0.54 (httptools): a connection that sends nothing, or trickles its headers,
is never closed (its keep-alive timer starts only after a first response), so 3,000 idle
sockets pinned 3,000 descriptors and, under a 1,024-descriptor limit, starved `/healthz`.
This subclass of uvicorn's httptools protocol adds:

- a header timeout: from the connection (or the start of the next request on a kept-alive one)
  to the end of the request's headers;
- a body timeout: from the end of the headers to the end of the body (not for WebSocket
  upgrades, which have none; a WebSocket authenticates in its handshake, so one that has not
  authenticated is a connection still inside its header timeout);
- a cap on open connections: at the cap, a new connection closes the oldest *silent* one (no
  byte received, none waiting in the socket: what a flood of idle sockets holds), else the
  oldest one without a complete request; if every connection is busy, the new one is closed.
  "Waiting in the socket" matters: in a burst of accepts, a real client's request is often
  still unread when the next connection arrives, and it must not be taken for idle.

Idle time between requests is uvicorn's own `timeout_keep_alive`.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import termios
from dataclasses import dataclass, field

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("livestats.gateway.connections")
SILENT_SCAN = 256  # oldest waiting connections examined for a silent one, per eviction


@dataclass
class ConnectionGuard:
    """Shared by every connection of one server. Counters are for tests and logs."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    header_max_bytes: int = 64 << 10  # a request's line and headers together
    waiting: dict[GuardedHttpProtocol, None] = field(default_factory=dict)  # oldest first
    timed_out: int = 0
    evicted: int = 0
    refused: int = 0

    def protocol_class(self) -> type[GuardedHttpProtocol]:
        """The class to pass as uvicorn's `http`: bound to this guard."""
        return type("GuardedHttp", (GuardedHttpProtocol,), {"guard": self})

    def make_room(self, newcomer: GuardedHttpProtocol, open_connections: int) -> bool:
        """Called with the newcomer counted; False if the newcomer must go."""
        if open_connections <= self.max_connections:
            return True
        candidates = [c for c in self.waiting if c is not newcomer]
        victim = next((c for c in candidates[:SILENT_SCAN] if c.silent()), None)
        if victim is None and candidates:
            victim = candidates[0]
        if victim is None:
            self.refused += 1
            return False
        self.evicted += 1
        log.debug("at the cap of %d connections: closing a waiting one", self.max_connections)
        victim.drop()
        return True


class GuardedHttpProtocol(HttpToolsProtocol):
    guard: ConnectionGuard
    _timer: asyncio.TimerHandle | None = None
    _header_bytes = 0  # received since the request began, while its headers are incomplete
    _spoke = False  # received anything at all

    def data_received(self, data: bytes) -> None:
        self._spoke = True
        if self in self.guard.waiting:
            # Up to the end of the headers only: the read that completes them may carry a body.
            end = data.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end
            if self._header_bytes > self.guard.header_max_bytes:
                self.guard.refused += 1
                self.drop()
                return
        super().data_received(data)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting(True)
        # uvicorn's `connections` also holds upgraded WebSockets: the cap covers both.
        if not self.guard.make_room(self, len(self.connections)):
            self.drop()
            return
        self._arm(self.guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._waiting(False)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a kept-alive connection's next request
            self._waiting(True)
            self._arm(self.guard.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._waiting(False)
        self._header_bytes = 0
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        super().on_headers_complete()
        if not upgrade:
            self._arm(self.guard.body_timeout_s)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def silent(self) -> bool:
        """Nothing received, nothing unread in the socket."""
        if self._spoke:
            return False
        sock = self.transport.get_extra_info("socket")  # asyncio's TransportSocket wrapper
        if sock is None or sock.fileno() < 0:
            return False
        unread = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, unread)
        except OSError:
            return False
        return unread[0] == 0

    def drop(self) -> None:
        """Close at once, without a response: the peer has not sent a request we could answer."""
        self._disarm()
        self._waiting(False)
        if not self.transport.is_closing():
            self.transport.abort()

    def _timeout(self) -> None:
        self._timer = None
        self.guard.timed_out += 1
        self.drop()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _waiting(self, yes: bool) -> None:
        if yes:
            self.guard.waiting[self] = None
        else:
            self.guard.waiting.pop(self, None)
