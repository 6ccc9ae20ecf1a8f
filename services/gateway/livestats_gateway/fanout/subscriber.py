"""One client connection's side of the fan-out: a send queue bounded in bytes, and the buffer
that holds live batches while the client's history is being replayed (the join handshake)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from livestats_shared.errors import LivestatsError

from .wire import Batch, CloseCode, Deliverable, Format, Frame


class SubscriberClosed(LivestatsError):
    """The gateway ended this subscription (slow client, shutdown); send `code` and close."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


class Sink(Protocol):
    """A connection written to directly (fanout/direct.py): complete frames as bytes, no sender
    task. `on_writable` is called when a sink that was not `ready` becomes so."""

    on_writable: Callable[[], None] | None

    def ready(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


class Subscriber:
    """Frames waiting for one client. The hub calls `offer`; the connection's sender `get`s, or,
    with a `sink`, frames go straight to the connection while it takes them and wait here only
    while it does not (the transport's buffer is above its high-water mark).

    Live batches are held (not sent) until `go_live`, so a joining client first gets its
    history and then exactly the live events after it. Queued plus held bytes are bounded:
    a client that falls behind is closed (4008), it never makes the gateway grow.

    One of these lives as long as its connection, idle ones by the thousand: slots, a list
    rather than a deque, and a future created only while someone waits (an asyncio.Event
    carries a deque of its own) keep an idle one small.
    """

    __slots__ = (
        "_closed_waiter",
        "_drain_waiter",
        "_held",
        "_held_bytes",
        "_keep",
        "_queue",
        "_queued_bytes",
        "_ready_waiter",
        "_sink",
        "closed",
        "events_queued",
        "fmt",
        "frames_sent",
        "greeted",
        "max_bytes",
        "token",
    )

    def __init__(self, fmt: Format, max_bytes: int, token: str | None = None, sink: Sink | None = None) -> None:
        self.fmt = fmt  # with a sink: WS_WIRE (frames are bytes, ready to write)
        self.max_bytes = max_bytes
        self.token = token  # the credential it was opened with, re-checked by recheck.py
        self._queue: list[Frame] = []
        self._queued_bytes = 0
        self._held: list[Deliverable] | None = []  # None once live
        self._keep: Callable[[Any], Deliverable | None] | None = None  # set by go_live
        self._held_bytes = 0
        self._ready_waiter: asyncio.Future[None] | None = None  # the sender, waiting for frames
        self._drain_waiter: asyncio.Future[None] | None = None  # a replay, waiting for the sender
        self._closed_waiter: asyncio.Future[SubscriberClosed] | None = None
        self.closed: SubscriberClosed | None = None
        self.greeted = False  # its first frame (hello/index) is queued: heartbeats may follow
        self.frames_sent = 0
        self.events_queued = 0  # live events queued (for metrics; history is counted by the join)
        self._sink = sink
        if sink is not None:
            sink.on_writable = self.flush

    # -- producer side (hub, join, heartbeats) -------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self._queued_bytes + self._held_bytes

    @property
    def backlogged(self) -> bool:
        """More than half of its queue is waiting: `writable` would wait."""
        return self._queued_bytes > self.max_bytes // 2

    @property
    def direct(self) -> bool:
        """Its frames go to a sink (fanout/direct.py), not to a sender task."""
        return self._sink is not None

    @property
    def live(self) -> bool:
        return self._held is None

    def offer(self, batch: Deliverable) -> None:
        """A live batch from the hub: held while joining, queued once live."""
        if self.closed is not None:
            return
        if self._held is not None:
            self._held.append(batch)
            self._held_bytes += batch.size
            self._check_bound()
            return
        # The reader can still be behind the history this client was sent: `keep` drops what
        # it already has (a copy is made only while the reader catches up).
        rest = self._keep(batch) if self._keep is not None else batch
        if rest is not None:
            self._count(rest)
            for frame in rest.frames(self.fmt):
                self._enqueue(frame)

    def push(self, frame: Frame) -> None:
        """A frame for this client only (hello, replayed history, heartbeat, pong)."""
        if self.closed is None:
            self._enqueue(frame)

    def control(self, kind: str, body: dict[str, Any]) -> None:
        self.push(self.fmt.control(kind, body))
        self.greeted = True

    async def writable(self) -> None:
        """Wait until the client has taken most of its queue (replay must not outrun it)."""
        if self.closed is None and self.backlogged:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self.closed is not None:
            raise self.closed

    def go_live(self, keep: Callable[[Any], Deliverable | None]) -> int:
        """End the join: queue the held batches `keep` lets through, then live batches as they
        come, through the same filter. Returns how many held batches were queued."""
        held, self._held, self._held_bytes = self._held or [], None, 0
        self._keep = keep
        queued = 0
        for batch in held:
            rest = keep(batch)
            if rest is not None:
                queued += 1
                self._count(rest)
                for frame in rest.frames(self.fmt):
                    self._enqueue(frame)
        return queued

    def stop_filtering(self) -> None:
        """Live batches need no `keep` any more (the join's filter saw the reader catch up)."""
        self._keep = None

    def close(self, code: CloseCode, reason: str) -> None:
        if self.closed is None:
            self.closed = SubscriberClosed(code, reason)
            self._queue = []
            self._held = []
            self._queued_bytes = self._held_bytes = 0
            _wake(self._ready_waiter)
            _wake(self._drain_waiter)
            if self._closed_waiter is not None and not self._closed_waiter.done():
                self._closed_waiter.set_result(self.closed)

    def closing(self) -> asyncio.Future[SubscriberClosed]:
        """Resolves with the reason once the gateway ends this subscription. The sender may be
        stuck writing to a client that stopped reading; this is how the session notices. (A
        result, not an exception: nobody has to be waiting when it happens.)"""
        if self._closed_waiter is None:
            self._closed_waiter = asyncio.get_running_loop().create_future()
            if self.closed is not None:
                self._closed_waiter.set_result(self.closed)
        return self._closed_waiter

    # -- consumer side (the connection's sender, or its sink) ----------------------------------

    def flush(self) -> None:
        """The sink takes frames again: write everything waiting, in one piece."""
        sink = self._sink
        if self.closed is not None or not self._queue or sink is None or not sink.ready():
            return
        frames, self._queue = self._queue, []
        self._queued_bytes = 0
        sink.write(b"".join(frames))  # type: ignore[arg-type]  # a sink's frames are bytes (WS_WIRE)
        self.frames_sent += len(frames)
        _wake(self._drain_waiter)

    async def get(self) -> list[Frame]:
        """Every frame queued so far (waits for at least one). Raises SubscriberClosed."""
        while not self._queue:
            if self.closed is not None:
                raise self.closed
            self._ready_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._ready_waiter
            finally:
                self._ready_waiter = None
        if self.closed is not None:
            raise self.closed
        frames, self._queue = self._queue, []
        self._queued_bytes = 0
        _wake(self._drain_waiter)
        self.frames_sent += len(frames)
        return frames

    # -------------------------------------------------------------------------------------------

    def _count(self, delivered: Deliverable) -> None:
        if isinstance(delivered, Batch):  # run summaries (/ws/runs) are not events
            self.events_queued += len(delivered.events)

    def _enqueue(self, frame: Frame) -> None:
        sink = self._sink
        if sink is not None and not self._queue and sink.ready():
            # Written now, by whoever offers it (the hub's reader, a replay): no queue, no task
            # switch per frame and client. Order holds: nothing is waiting before it.
            sink.write(frame)  # type: ignore[arg-type]  # a sink's frames are bytes (WS_WIRE)
            self.frames_sent += 1
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if self._ready_waiter is not None:
            _wake(self._ready_waiter)
        self._check_bound()

    def _check_bound(self) -> None:
        if self.buffered_bytes > self.max_bytes:
            self.close(CloseCode.SLOW_CLIENT, f"client fell more than {self.max_bytes} bytes behind")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
