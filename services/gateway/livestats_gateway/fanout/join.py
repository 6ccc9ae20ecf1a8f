"""The join handshake: attach first (live batches are held), replay history from `since`, then
release the held batches minus what history already covered. Nothing published while a
client joins is lost or sent twice, however fast the run publishes.

Every replayed page is checked for continuity, not only the first: history can be trimmed
while a replay waits for a slow client, and the next page then starts later than the last one
ended. The client gets a `reset` there, never a silent gap (docs/api.md, "Continuity").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from livestats_shared import keys
from livestats_shared.errors import InvalidEvent
from livestats_shared.ids import validate_run_id
from livestats_shared.stats import RunSnapshot

from .hub import Hub
from .subscriber import Subscriber
from .wire import (
    PROTOCOL_VERSION,
    Batch,
    RawEntry,
    WireEvent,
    encode_entry,
    format_stream_id,
    now_ms,
    parse_stream_id,
)

StreamId = tuple[int, int]


async def join(hub: Hub, sub: Subscriber, run_id: str, since: str | None) -> None:
    """Queue hello, history after `since` (all of it if None), `live`, then go live.

    Raises InvalidRunId, InvalidStreamId (bad `since`), UnknownRun, or a Redis error; the
    caller closes the connection with the matching code (opening.py).
    """
    rid = validate_run_id(run_id)
    since_sid = parse_stream_id(since) if since else None
    stream = keys.run_events(rid)

    await hub.attach(rid, stream, sub)
    raw = await hub.run_hash(rid)
    snapshot = RunSnapshot.from_hash(rid, raw).model_dump(mode="json") if raw else None
    sub.control(
        "hello",
        {"protocol": PROTOCOL_VERSION, "run_id": rid, "server_ts": now_ms(), "since": since, "snapshot": snapshot},
    )
    replay = _Replay(hub, sub, rid, stream)
    await replay.run(await replay.resume_point(since_sid))
    hub.stats.replayed(replay.events_sent, replay.bytes_sent)
    _go_live(sub, replay.last_sid or since_sid or (0, 0))


def _go_live(sub: Subscriber, last_sid: StreamId) -> None:
    """`live`, then the held batches and every later one without what history already sent.
    No await in here: the held batches and the switch to live happen in one step."""
    sent_up_to = last_sid

    def keep(batch: Batch) -> Batch | None:
        nonlocal sent_up_to
        rest = batch.after(sent_up_to)
        if rest is not None and rest.last_sid is not None:
            sent_up_to = rest.last_sid
        return rest

    sub.control("live", {"last_id": format_stream_id(last_sid) if last_sid != (0, 0) else None})
    sub.go_live(keep)


class _Replay:
    """One client's history, page by page, each page checked against the seq that must come next."""

    def __init__(self, hub: Hub, sub: Subscriber, run_id: str, stream: str) -> None:
        self.hub, self.sub, self.run_id, self.stream = hub, sub, run_id, stream
        self.rid_bytes = run_id.encode()
        self.expected: int | None = None  # the seq the next event must have (None: unknown)
        self.last_sid: StreamId | None = None  # of the last event queued
        self.events_sent = 0
        self.bytes_sent = 0  # event JSON; WebSocket frames are str

    async def resume_point(self, since: StreamId | None) -> str:
        """The XRANGE start for `since`, and the seq the first event must have. A position before
        everything the stream holds (`0-0` included) means "from the start": no reset unless
        the start was trimmed, which the first page's check reports."""
        self.expected = 1
        if since is None:
            return "-"
        since_id = format_stream_id(since)
        entry = await self.hub.history_entry(self.stream, since_id)
        if entry is not None:
            event = _event_or_none(entry, self.rid_bytes)
            self.expected = None if event is None else event.seq + 1
            return "(" + since_id
        first = await self.hub.history_start(self.stream)
        if first is None or _sid_of(first) > since:
            return "-"
        # Inside the stream's range but not one of its ids: another stream's, or this stream
        # was deleted and recreated. The client starts again from the snapshot.
        nxt = _event_or_none(first, self.rid_bytes)
        await self._reset("unknown_since", f"{since_id} is not in the stream", None, nxt)
        if nxt is None:
            self.expected = None  # the first page's first event is whatever it is
        return "-"

    async def run(self, start: str) -> None:
        page = self.hub.replay_page
        fetching: asyncio.Task[list[RawEntry]] | None = asyncio.create_task(self.hub.history_page(self.stream, start))
        try:
            while fetching is not None:
                entries = await fetching
                fetching = None
                # The next page is read while this one is sent: Redis and this process overlap.
                if len(entries) == page:
                    after = "(" + entries[-1][0].decode()
                    fetching = asyncio.create_task(self.hub.history_page(self.stream, after))
                await self._send_checked(self._decode(entries))
        finally:
            if fetching is not None:  # the join failed or was cancelled (client gone) mid-replay
                fetching.cancel()
                await asyncio.gather(fetching, return_exceptions=True)  # its outcome no longer matters

    def _decode(self, entries: list[RawEntry]) -> list[WireEvent]:
        events: list[WireEvent] = []
        for entry_id, fields in entries:
            try:
                events.append(encode_entry(entry_id, fields, self.rid_bytes))
            except InvalidEvent:
                self.hub.stats.invalid()  # the live reader logs these; history just skips them
        return events

    async def _send_checked(self, events: list[WireEvent]) -> None:
        """Queue `events`, with a `reset` before each one that does not follow its predecessor."""
        while events:
            at = first_break(events, self.expected)
            if at is None:
                await self._send(events)
                return
            await self._send(events[:at])
            await self._reset_at(events[at])
            events = events[at:]

    async def _reset_at(self, event: WireEvent) -> None:
        """A break before `event`: the stream was trimmed past the client (it holds nothing
        older than `event` now), had entries deleted from its middle, or was recreated."""
        expected = self.expected
        if expected is not None and event.seq < expected:
            reason, detail = "stream_reset", f"expected seq {expected}, stream has {event.seq}: it was recreated"
        else:
            first = await self.hub.history_start(self.stream)
            if first is None or _sid_of(first) >= event.sid:
                reason = "trimmed"
                detail = f"history now starts at seq {event.seq} (id {event.id}); earlier events were trimmed"
            else:
                reason, detail = "gap", f"expected seq {expected}, stream has {event.seq}"
        await self._reset(reason, detail, expected, event)

    async def _reset(self, reason: str, detail: str, expected: int | None, nxt: WireEvent | None) -> None:
        self.sub.control("reset", await self.hub.reset_body(self.run_id, reason, detail, expected, nxt))
        self.hub.stats.reset(reason)
        if nxt is not None:
            self.expected = nxt.seq

    async def _send(self, events: Sequence[WireEvent]) -> None:
        if not events:
            return
        step = self.hub.frame_max_events
        for i in range(0, len(events), step):
            await self._writable()
            self.sub.push(self.sub.fmt.events(events[i : i + step]))
        self.expected = events[-1].seq + 1
        self.last_sid = events[-1].sid
        self.events_sent += len(events)
        self.bytes_sent += sum(len(e.json) for e in events)

    async def _writable(self) -> None:
        """Wait until the client has taken most of its queue: a replay never outruns it."""
        if not self.sub.backlogged:
            await self.sub.writable()  # at once; raises if the client was closed meanwhile
            return
        self.hub.stats.replay_waiting(+1)
        try:
            await self.sub.writable()
        finally:
            self.hub.stats.replay_waiting(-1)


def first_break(events: Sequence[WireEvent], expected: int | None) -> int | None:
    """The index of the first event whose seq is not its predecessor's plus one (for the first
    event: not `expected`, unless that is None), or None if the page is contiguous.

    The publish script assigns seq and stream id in one step, so seq rises with the id: a page
    whose first and last seq span exactly its length has no hole, and the common case costs two
    comparisons whatever the page size. Only a page that fails that is scanned."""
    if not events:
        return None
    first = events[0].seq
    if expected is not None and first != expected:
        return 0
    if events[-1].seq - first == len(events) - 1:
        return None
    for i in range(1, len(events)):
        if events[i].seq != events[i - 1].seq + 1:
            return i
    return None


def _sid_of(entry: RawEntry) -> StreamId:
    ms, _, n = entry[0].partition(b"-")
    return int(ms), int(n or b"0")


def _event_or_none(entry: RawEntry, run_id: bytes) -> WireEvent | None:
    try:
        return encode_entry(entry[0], entry[1], run_id)
    except InvalidEvent:
        return None
