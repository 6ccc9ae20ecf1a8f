"""The join handshake: attach first (live batches are held), replay history from `since`, then
release the held batches minus what history already covered. Nothing published while a
client joins is lost or sent twice, however fast the run publishes.
"""

from __future__ import annotations

import asyncio

from livestats_shared import keys
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidEvent
from livestats_shared.history import read_stats_hash
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


async def join(hub: Hub, sub: Subscriber, run_id: str, since: str | None) -> None:
    """Queue hello, history after `since` (all of it if None), `live`, then go live.

    Raises InvalidRunId, InvalidStreamId (bad `since`), UnknownRun, or a Redis error; the
    caller closes the connection with the matching code.
    """
    rid = validate_run_id(run_id)
    since_sid = parse_stream_id(since) if since else None
    stream = keys.run_events(rid)
    redis, config = hub.redis, hub.config

    await hub.attach(rid, stream, sub)
    raw = await read_stats_hash(redis, rid)
    if not raw and not await redis.exists(stream):
        raise UnknownRun(rid)
    snapshot = RunSnapshot.from_hash(rid, raw).model_dump(mode="json") if raw else None
    sub.control(
        "hello",
        {"protocol": PROTOCOL_VERSION, "run_id": rid, "server_ts": now_ms(), "since": since, "snapshot": snapshot},
    )

    start = "-"
    expect_first_seq: int | None = 1  # a full replay must start at seq 1, else it was trimmed
    if since_sid is not None:
        since_id = format_stream_id(since_sid)
        if await hub.history.xrange(stream, min=since_id, max=since_id, count=1):
            start, expect_first_seq = "(" + since_id, None
        else:
            first = await hub.history.xrange(stream, count=1)
            trimmed = bool(first) and parse_stream_id(first[0][0].decode()) > since_sid
            reason = "trimmed" if trimmed else "unknown_since"
            detail = f"{since_id} is older than the retained history" if trimmed else f"{since_id} is not in the stream"
            sub.control("reset", await hub.reset_body(rid, reason, detail))
            hub.resets_sent[reason] += 1
            expect_first_seq = None

    last_sid = since_sid or (0, 0)
    rid_bytes = rid.encode()
    replayed = replayed_bytes = 0
    fetching: asyncio.Task[list[RawEntry]] | None = asyncio.create_task(_page(hub, stream, start))
    try:
        while fetching is not None:
            entries = await fetching
            fetching = None
            # The next page is read while this one is encoded: Redis and this process overlap.
            more = len(entries) == config.replay_page
            if more:
                fetching = asyncio.create_task(_page(hub, stream, "(" + entries[-1][0].decode()))
            events: list[WireEvent] = []
            for entry_id, fields in entries:
                try:
                    events.append(encode_entry(entry_id, fields, rid_bytes))
                except InvalidEvent:
                    hub.invalid_entries += 1  # the live reader logs these; history just skips them
            if events and expect_first_seq is not None and events[0].seq != expect_first_seq:
                detail = f"history starts at seq {events[0].seq}; earlier events were trimmed"
                sub.control("reset", await hub.reset_body(rid, "trimmed", detail))
                hub.resets_sent["trimmed"] += 1
            expect_first_seq = None
            for i in range(0, len(events), config.frame_max_events):
                await sub.writable()
                sub.push(sub.fmt.events(events[i : i + config.frame_max_events]))
            replayed += len(events)
            replayed_bytes += sum(len(e.json) for e in events)  # event JSON; WebSocket frames are str
            if events:
                last_sid = events[-1].sid
    finally:
        if fetching is not None:  # the join failed or was cancelled (client gone) mid-replay
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)  # its outcome no longer matters

    sent_up_to = last_sid
    hub.events_replayed += replayed
    hub.metrics.replay_events.observe(replayed)
    hub.metrics.replay_bytes.inc(replayed_bytes)

    def keep(batch: Batch) -> Batch | None:
        nonlocal sent_up_to
        rest = batch.after(sent_up_to)
        if rest is not None and rest.last_sid is not None:
            sent_up_to = rest.last_sid
        return rest

    # No await from here on: the held batches and the switch to live happen in one step.
    sub.control("live", {"last_id": format_stream_id(last_sid) if last_sid != (0, 0) else None})
    sub.go_live(keep)


async def _page(hub: Hub, stream: str, start: str) -> list[RawEntry]:
    """Up to `replay_page` entries of `stream` from `start` on (`(id`: after id)."""
    entries: list[RawEntry] = await hub.history.xrange(stream, min=start, max="+", count=hub.config.replay_page)
    return entries
