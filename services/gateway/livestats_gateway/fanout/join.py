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
    HistoryPage,
    RawEntry,
    WireEvent,
    encode_entry,
    encode_page,
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
        if rest is batch and batch.reset is None and batch.events:
            # Wholly after the history: the reader has caught up, and every later batch comes
            # after this one. No filter from here on (it ran for every batch and client).
            sub.stop_filtering()
        elif rest is not None and rest.last_sid is not None:
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
        page_size = self.hub.replay_page
        fetching: asyncio.Task[list[RawEntry]] | None = asyncio.create_task(self.hub.history_page(self.stream, start))
        try:
            while fetching is not None:
                entries = await fetching
                fetching = None
                # The next page is read while this one is sent: Redis and this process overlap.
                if len(entries) == page_size:
                    after = "(" + entries[-1][0].decode()
                    fetching = asyncio.create_task(self.hub.history_page(self.stream, after))
                page = encode_page(entries, self.rid_bytes)
                for _ in range(page.invalid):
                    self.hub.stats.invalid()  # the live reader logs these; history just skips them
                await self._send_checked(page)
        finally:
            if fetching is not None:  # the join failed or was cancelled (client gone) mid-replay
                fetching.cancel()
                await asyncio.gather(fetching, return_exceptions=True)  # its outcome no longer matters

    async def _send_checked(self, page: HistoryPage) -> None:
        """Queue the page's events, with a `reset` before each one that does not follow its
        predecessor."""
        start, stop = 0, len(page)
        while start < stop:
            at = first_break(page.seqs, self.expected, start)
            if at is None:
                await self._send(page, start, stop)
                return
            await self._send(page, start, at)
            await self._reset_at(page.event(at))
            start = at

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

    async def _send(self, page: HistoryPage, start: int, stop: int) -> None:
        if start >= stop:
            return
        step, fmt = self.hub.frame_max_events, self.sub.fmt
        for i in range(start, stop, step):
            await self._writable()
            self.sub.push(fmt.page(page, i, min(i + step, stop)))
        self.expected = page.seqs[stop - 1] + 1
        self.last_sid = page.sid(stop - 1)
        self.events_sent += stop - start
        self.bytes_sent += sum(map(len, page.jsons[start:stop]))

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


def first_break(seqs: Sequence[int], expected: int | None, start: int = 0) -> int | None:
    """The index (from `start` on) of the first seq that is not its predecessor's plus one (for
    the one at `start`: not `expected`, unless that is None), or None if they all follow.

    The publish script assigns seq and stream id in one step, so seq rises with the id: a page
    whose first and last seq span exactly its length has no hole, and the common case costs two
    comparisons whatever the page size. Only a page that fails that is scanned."""
    stop = len(seqs)
    if start >= stop:
        return None
    first = seqs[start]
    if expected is not None and first != expected:
        return start
    if seqs[-1] - first == stop - 1 - start:
        return None
    for i in range(start + 1, stop):
        if seqs[i] != seqs[i - 1] + 1:
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
