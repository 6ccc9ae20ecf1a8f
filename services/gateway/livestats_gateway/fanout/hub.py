"""The shared reader: one blocking XREAD per gateway process over every stream that has a
subscriber (one per hash slot on a Cluster: groups.py, reader.py), fanned out to all of them.

Redis load does not grow with the number of viewers: a stream is read once however many
clients watch it (channels are reference-counted by their subscribers). The reader has its own
connection; when a stream is added, another connection sends CLIENT UNBLOCK so the new stream
is read at once instead of after the block runs out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any

from livestats_shared import keys
from livestats_shared.cluster import cluster_of
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidEvent
from livestats_shared.history import read_stats_hash
from livestats_shared.redis_client import UNAVAILABLE, connect
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from ..config import GatewayConfig
from ..ops.background import BackgroundTasks
from .groups import Channel, ReadGroup
from .reader import READER_NAME, ClusterSlots, OneServer, Router
from .stats import FanoutStats
from .subscriber import Subscriber
from .wire import Batch, CloseCode, Frame, RawEntry, WireEvent, encode_entry, entry_fields, now_ms, raw_stream_replies

log = logging.getLogger("livestats.gateway.hub")


class Hub:
    def __init__(self, config: GatewayConfig, redis: Redis, stats: FanoutStats | None = None) -> None:
        self.config = config
        self.stats = stats or FanoutStats()  # owned by metrics.py, which exports it
        self.redis = redis  # commands other than the blocking read
        cluster = cluster_of(redis)
        self._router: Router = (
            OneServer(connect(config.redis_url, READER_NAME, single_connection=True), redis)
            if cluster is None
            else ClusterSlots(cluster)
        )
        # Stream reads for joins (history replay, attach): unparsed replies, see wire.py.
        self._history = raw_stream_replies(connect(config.redis_url, "livestats.gateway.history", busy_loop=True))
        self._channels: dict[str, Channel] = {}
        self._attached: dict[Subscriber, Channel] = {}  # a subscriber reads one stream
        self.connections: set[Subscriber] = set()  # every open client, for heartbeats and shutdown
        self._groups: dict[Hashable, ReadGroup] = {}
        self._group_died = False
        self._tasks = BackgroundTasks(log, "no live events are delivered")

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        if self._router.permanent:
            self._start_group(None)
        self._tasks.start(self._heartbeat_loop(), "hub-heartbeat")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sub in list(self.connections):
            sub.close(CloseCode.GOING_AWAY, "gateway shutting down")
        groups = list(self._groups.values())
        for group in groups:
            if group.task is not None:
                group.task.cancel()  # its connection closes as it ends
        await asyncio.gather(*(g.task for g in groups if g.task is not None), return_exceptions=True)
        await self._tasks.stop()
        await self._router.close()
        await self._history.aclose()

    def alive(self) -> bool:
        """The reader loops run and are not failing to reach Redis (for /readyz; an idle reader
        with no streams to read is alive)."""
        return self._tasks.alive() and not self._group_died and self.connected

    @property
    def connected(self) -> bool:
        """False while some group's reads cannot reach Redis."""
        return all(g.connected for g in self._groups.values())

    @property
    def group_count(self) -> int:
        """Blocking reads in flight at once: 1 on one server, the watched slots on a Cluster."""
        return len(self._groups)

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
            self._stream_added(channel)
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
        group = self._groups.get(self._router.group_of(channel.stream))
        if group is not None and group.channels.get(channel.stream) is channel:
            del group.channels[channel.stream]

    def _stream_added(self, channel: Channel) -> None:
        key = self._router.group_of(channel.stream)
        group = self._groups.get(key) or self._start_group(key)
        group.channels[channel.stream] = channel
        group.stream_added()

    # -- the reader --------------------------------------------------------------------------

    def _start_group(self, key: Hashable) -> ReadGroup:
        group = self._groups[key] = ReadGroup(
            key, self._router, self.config, self.stats, self._deliver, self._reset_rewound
        )
        group.task = asyncio.create_task(self._read_loop(group), name=f"hub-reader-{key}")
        group.task.add_done_callback(self._group_ended)
        return group

    def _group_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._group_died = True  # /readyz says so
            log.critical("%s died: no live events are delivered", task.get_name(), exc_info=task.exception())

    async def _read_loop(self, group: ReadGroup) -> None:
        try:
            await group.run()
        finally:
            if self._groups.get(group.key) is group:
                del self._groups[group.key]
            await group.close()

    async def _reset_rewound(self, group: list[Channel]) -> None:
        """A stream that now ends before what this process delivered from it lost its newest
        entries: a failover to a replica that had not received them (replica acknowledgement
        off, or events delivered before it came). Its clients get a `reset` now, not at the
        stream's next event, which may never come, and reading resumes at its new end. Called
        by a read group after an outage, for its streams, before it reads again."""
        channels = [c for c in group if c.position is not None]
        if not channels:
            return
        async with self._history.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.xrevrange(channel.stream, count=1)
            ends: list[list[RawEntry]] = await pipe.execute()
        for channel, last in zip(channels, ends, strict=True):
            position = channel.position
            end = last[0][0] if last else b"0-0"
            if position is None or self._channels.get(channel.stream) is not channel or _sid(end) >= _sid(position):
                continue
            seq = _seq_of(last[0][1]) if last else None
            expected = None if channel.last_seq is None else channel.last_seq + 1
            detail = (
                f"the stream now ends at {end.decode()} (seq {seq}), before {position.decode()} "
                f"(seq {channel.last_seq}) that was delivered: its newest events were lost (a failover?)"
            )
            log.warning("run %s: %s; clients get a reset", channel.run_id, detail)
            self.stats.stream_break()
            self.stats.reset("stream_reset", len(channel.subscribers))
            body = await self.reset_body(channel.run_id, "stream_reset", detail, expected, None)
            channel.position, channel.last_seq = end, seq
            self._fanout(channel, Batch([], body))

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


def _sid(entry_id: bytes) -> tuple[int, int]:
    ms, _, n = entry_id.partition(b"-")
    return int(ms), int(n or b"0")


def _seq_of(flat: list[bytes]) -> int | None:
    try:
        return int(entry_fields(flat)[b"seq"])
    except (KeyError, ValueError):
        return None
