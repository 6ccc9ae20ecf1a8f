"""The shared reader: one blocking XREAD per gateway process over every stream that has a
subscriber, fanned out to all of them.

Redis load does not grow with the number of viewers: a stream is read once however many
clients watch it (channels are reference-counted by their subscribers). The reader has its own
connection; when a stream is added, another connection sends CLIENT UNBLOCK so the new stream
is read at once instead of after the block runs out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livestats_shared import keys
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidEvent
from livestats_shared.history import read_stats_hash
from livestats_shared.redis_client import UNAVAILABLE, connect
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from ..config import GatewayConfig
from ..ops.background import BackgroundTasks, Backoff
from .stats import FanoutStats
from .subscriber import Subscriber
from .wire import Batch, CloseCode, Frame, RawEntry, WireEvent, encode_entry, entry_fields, now_ms, raw_stream_replies

log = logging.getLogger("livestats.gateway.hub")
_UNBLOCK_RETRY_S = 0.002


class Channel:
    """One stream and the subscribers reading it through this process."""

    def __init__(self, run_id: str, stream: str) -> None:
        self.run_id = run_id
        self.run_id_bytes = run_id.encode()
        self.stream = stream
        self.subscribers: set[Subscriber] = set()
        self.position: bytes | None = None  # last entry id read; None until resolved
        self.last_seq: int | None = None  # for the continuity check
        self.resolved: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Hub:
    def __init__(self, config: GatewayConfig, redis: Redis, stats: FanoutStats | None = None) -> None:
        self.config = config
        self.stats = stats or FanoutStats()  # owned by metrics.py, which exports it
        self._linger_s = config.fanout_linger_ms / 1000
        self.redis = redis  # commands other than the blocking read
        self._reader = raw_stream_replies(connect(config.redis_url, "livestats.gateway.reader", single_connection=True))
        # Stream reads for joins (history replay, attach): unparsed replies, see wire.py.
        self._history = raw_stream_replies(connect(config.redis_url, "livestats.gateway.history", busy_loop=True))
        self._channels: dict[str, Channel] = {}
        self._attached: dict[Subscriber, Channel] = {}  # a subscriber reads one stream
        self.connections: set[Subscriber] = set()  # every open client, for heartbeats and shutdown
        self._generation = 0  # bumped when a stream is added
        self._reading_generation = 0  # generation of the XREAD in flight
        self._in_read = False
        self._reader_id: int | None = None
        self._wake = asyncio.Event()
        self._unblocking: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks(log, "no live events are delivered")
        self.connected = True  # False while the reader cannot reach Redis

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        self._tasks.start(self._read_loop(), "hub-reader")
        self._tasks.start(self._heartbeat_loop(), "hub-heartbeat")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sub in list(self.connections):
            sub.close(CloseCode.GOING_AWAY, "gateway shutting down")
        if self._unblocking is not None:
            self._unblocking.cancel()
        await self._tasks.stop()
        await self._reader.aclose()
        await self._history.aclose()

    def alive(self) -> bool:
        """The reader loop runs and is not failing to reach Redis (for /readyz; an idle reader
        with no streams to read is alive)."""
        return self._tasks.alive() and self.connected

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    # -- subscriptions -----------------------------------------------------------------------

    def connection(self, sub: Subscriber) -> _Connection:
        """`with hub.connection(sub):` registers a client for heartbeats, token re-checks and
        shutdown, and detaches it from its stream at the end."""
        return _Connection(self, sub)

    def _disconnect(self, sub: Subscriber) -> None:
        self.connections.discard(sub)
        self.detach(sub)
        self.stats.client_left(sub.fmt.name, sub.frames_sent, sub.events_queued)

    async def attach(self, run_id: str, stream: str, sub: Subscriber) -> Channel:
        """Subscribe `sub` (still joining: live batches are held) to `stream`. When this
        returns, every event after the stream's current end will reach `sub`."""
        channel = self._channels.get(stream)
        if channel is None:
            channel = self._channels[stream] = Channel(run_id, stream)
            channel.subscribers.add(sub)
            self._attached[sub] = channel
            try:
                last = await self._history.xrevrange(stream, count=1)
            except BaseException as exc:
                self._drop(channel)
                channel.resolved.set_exception(exc)
                channel.resolved.exception()  # retrieved here; other waiters re-raise it
                raise
            channel.position = last[0][0] if last else b"0-0"
            channel.last_seq = _seq_of(last[0][1]) if last else None
            channel.resolved.set_result(None)
            self._stream_added()
        else:
            channel.subscribers.add(sub)
            self._attached[sub] = channel
            await asyncio.shield(channel.resolved)
        return channel

    def detach(self, sub: Subscriber) -> None:
        channel = self._attached.pop(sub, None)
        if channel is not None:
            channel.subscribers.discard(sub)
            if not channel.subscribers:
                # The reader drops it on its next pass; no need to interrupt a block for that.
                self._drop(channel)

    def _drop(self, channel: Channel) -> None:
        if self._channels.get(channel.stream) is channel:
            del self._channels[channel.stream]

    def _stream_added(self) -> None:
        self._generation += 1
        self._wake.set()
        if self._in_read and (self._unblocking is None or self._unblocking.done()):
            self._unblocking = asyncio.create_task(self._unblock(), name="hub-unblock")
            self._unblocking.add_done_callback(self._unblock_ended)

    async def _unblock(self) -> None:
        """Interrupt the reader's XREAD so it picks up the new streams now. CLIENT UNBLOCK can
        arrive before the XREAD does (then it unblocks nothing): retry until the reader is
        reading with the current streams."""
        while self._in_read and self._reading_generation < self._generation and self._reader_id is not None:
            if await self.redis.client_unblock(self._reader_id):
                return
            await asyncio.sleep(_UNBLOCK_RETRY_S)

    def _unblock_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # The reader still sees the stream when its block times out; say why it was late.
            log.warning("could not interrupt the reader for a new stream: %r", task.exception())

    # -- the reader --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        backoff = Backoff()
        while True:
            streams = {c.stream: c.position for c in self._channels.values() if c.position is not None}
            if not streams:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._reader_id is None:
                    self._reader_id = int(await self._reader.client_id())
                self._reading_generation = self._generation
                self._in_read = True
                try:
                    reply = await self._reader.xread(
                        streams,  # type: ignore[arg-type]
                        count=self.config.read_count,
                        block=self.config.read_block_ms,
                    )
                finally:
                    self._in_read = False
            except UNAVAILABLE as exc:
                if self.connected or backoff.first_attempt:
                    log.warning("stream reader lost Redis (%s); retrying", exc)
                self.connected = False
                self._reader_id = None  # a new connection has a new id
                await backoff.wait()
                continue
            if not self.connected:
                log.info("stream reader connected")
            self.connected = True
            backoff.reset()
            self.stats.read()  # one per XREAD, whatever number of streams it answered for
            for raw_stream, entries in reply or ():
                stream = raw_stream.decode()
                channel = self._channels.get(stream)
                # Dropped (or dropped and re-added at another position) while we read: skip.
                if channel is None or channel.position != streams[stream]:
                    continue
                await self._deliver(channel, entries)
            if reply and self._linger_s:
                # Let the next few events gather in Redis: one frame per client for several
                # events instead of one each, which is what saturates a busy gateway's CPU.
                # A fixed pause costs a quiet stream nothing (its next event comes after the
                # pause is over); scaling it with the last read's size did worse (commit 2d1b378).
                await asyncio.sleep(self._linger_s)

    async def _deliver(self, channel: Channel, entries: list[RawEntry]) -> None:
        events: list[WireEvent] = []
        for entry_id, fields in entries:
            try:
                event = encode_entry(entry_id, fields, channel.run_id_bytes)
            except InvalidEvent as exc:
                self.stats.invalid()
                log.warning("run %s: skipping an entry livestats did not write: %s", channel.run_id, exc)
                continue
            if channel.last_seq is not None and event.seq != channel.last_seq + 1:
                # Deleted and recreated, or trimmed past us: never skip silently.
                if events:
                    self._fanout(channel, Batch(events))
                    events = []
                reason = "stream_reset" if event.seq <= channel.last_seq else "gap"
                detail = f"expected seq {channel.last_seq + 1}, stream has {event.seq}"
                log.warning("run %s: %s (%s); clients get a reset", channel.run_id, reason, detail)
                self.stats.stream_break()
                self.stats.reset(reason, len(channel.subscribers))
                body = await self.reset_body(channel.run_id, reason, detail, channel.last_seq + 1, event)
                channel.last_seq = event.seq
                self._fanout(channel, Batch([event], body))
                continue
            channel.last_seq = event.seq
            events.append(event)
        channel.position = entries[-1][0]
        self.stats.events_read += len(entries)
        self._observe_lag(entries)
        if events:
            self._fanout(channel, Batch(events))

    def _observe_lag(self, entries: list[RawEntry]) -> None:
        """Once per batch, not per event: the oldest event's age (delivery lag) and the
        newest one's (reader lag). Event times come from the producer's clock."""
        oldest, newest = _ts_of(entries[0][1]), _ts_of(entries[-1][1])
        now = now_ms()
        self.stats.lag(
            None if oldest is None else max(0, now - oldest) / 1000,
            None if newest is None else max(0, now - newest) / 1000,
        )

    def _fanout(self, channel: Channel, batch: Batch) -> None:
        for sub in list(channel.subscribers):
            sub.offer(batch)

    # -- history, for joins ------------------------------------------------------------------

    @property
    def frame_max_events(self) -> int:
        return self.config.frame_max_events

    async def history_page(self, stream: str, start: str) -> list[RawEntry]:
        """Up to `replay_page` entries of `stream` from XRANGE `start` on (`-`: the first;
        `(id`: after id), unparsed (wire.py)."""
        entries: list[RawEntry] = await self._history.xrange(stream, min=start, max="+", count=self.config.replay_page)
        return entries

    @property
    def replay_page(self) -> int:
        return self.config.replay_page

    async def history_entry(self, stream: str, entry_id: str) -> RawEntry | None:
        """The entry `entry_id` of `stream`, if it is still there."""
        found: list[RawEntry] = await self._history.xrange(stream, min=entry_id, max=entry_id, count=1)
        return found[0] if found else None

    async def history_start(self, stream: str) -> RawEntry | None:
        """The oldest entry `stream` still holds (None if it is empty or gone)."""
        first: list[RawEntry] = await self._history.xrange(stream, count=1)
        return first[0] if first else None

    async def run_hash(self, run_id: str) -> dict[str, str]:
        """The run's stats hash (empty when only its stream is left). Raises UnknownRun when the
        run has neither: the one existence check of the WebSocket and SSE endpoints."""
        raw = await read_stats_hash(self.redis, run_id)
        if not raw and not await self.redis.exists(keys.run_events(run_id)):
            raise UnknownRun(run_id)
        return raw

    async def reset_body(
        self, run_id: str, reason: str, detail: str, expected_seq: int | None, next_event: WireEvent | None
    ) -> dict[str, Any]:
        """The body of a `reset` frame (docs/api.md, "Continuity"): why, the seq the client needed
        next, the event the stream goes on with, and the run's snapshot to start again from."""
        try:
            raw = await read_stats_hash(self.redis, run_id)
        except UNAVAILABLE as exc:
            log.warning("run %s: reset sent without a snapshot: %s", run_id, exc)
            raw = {}
        snapshot = RunSnapshot.from_hash(run_id, raw).model_dump(mode="json") if raw else None
        return {
            "reason": reason,
            "detail": detail,
            "expected_seq": expected_seq,
            "next_seq": None if next_event is None else next_event.seq,
            "next_id": None if next_event is None else next_event.id,
            "snapshot": snapshot,
        }

    # -- heartbeats --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Server time to every client, encoded once per format per beat."""
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            body = {"server_ts": now_ms()}
            frames: dict[str, Frame] = {}
            for sub in [s for s in self.connections if s.greeted]:
                frame = frames.get(sub.fmt.key)
                if frame is None:
                    frame = frames[sub.fmt.key] = sub.fmt.control("heartbeat", body)
                sub.push(frame)


class _Connection:
    """A class, not a generator-based context manager: one lives as long as each connection,
    and a suspended generator frame is several times its size."""

    __slots__ = ("hub", "sub")

    def __init__(self, hub: Hub, sub: Subscriber) -> None:
        self.hub, self.sub = hub, sub

    def __enter__(self) -> Subscriber:
        self.hub.connections.add(self.sub)
        return self.sub

    def __exit__(self, *exc: object) -> None:
        self.hub._disconnect(self.sub)


def _ts_of(flat: list[bytes]) -> int | None:
    try:
        return int(entry_fields(flat)[b"ts"])
    except (KeyError, ValueError):
        return None


def _seq_of(flat: list[bytes]) -> int | None:
    try:
        return int(entry_fields(flat)[b"seq"])
    except (KeyError, ValueError):
        return None
