"""Pages of the run index (newest first) and of one run's event stream."""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from livestats_shared import keys
from livestats_shared.errors import InvalidEvent, InvalidRunId
from livestats_shared.history import decode_entry
from livestats_shared.ids import RunId, validate_run_id
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from ..fanout.wire import STREAM_ID_PART_MAX, format_stream_id, parse_stream_id
from .schemas import EventPage

log = logging.getLogger("livestats.gateway.api")

# Index entries one request examines at most: a filter that matches few runs answers a
# short page with a cursor instead of reading 30 days of runs in one request.
SCAN_BUDGET = 5_000  # index entries
FILTER_BATCH = 200  # index entries read per round trip while a filter skips runs
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
STREAM_ID_PATTERN = r"^[0-9]+(-[0-9]+)?$"

Row = tuple[bytes, float]  # (member, score) of the run index
_MAX_TIES = 1_000_000  # entries of one millisecond a cursor may skip (a sanity bound)


@dataclass(frozen=True)
class IndexPosition:
    """Where a page of the run index ended: after the first `skip` entries whose score (creation
    time, ms) is `score`, in the index's order (newest first; equal scores by member, descending).
    A cursor holds this and nothing else: never a run id, so paging reveals no run the caller
    may not see (docs/api.md, "Security: sessions, tokens, revocation")."""

    score: float
    skip: int

    def encode(self) -> str:
        raw = f"{self.score!r} {self.skip}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> IndexPosition:
        """Raises ValueError for a cursor `encode` did not produce."""
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))  # binascii.Error is a ValueError
        score, sep, skip = raw.decode("ascii").partition(" ")  # UnicodeDecodeError is a ValueError
        value, count = float(score), int(skip)
        if not sep or not math.isfinite(value) or not 0 < count <= _MAX_TIES:
            raise ValueError("not a cursor from this API")
        return cls(value, count)


async def read_run_page(
    redis: Redis,
    *,
    limit: int,
    keep: Callable[[dict[str, str]], bool] | None,
    after: IndexPosition | None,
    indexes: Sequence[str] = (keys.RUNS_INDEX,),
) -> tuple[list[RunSnapshot], IndexPosition | None]:
    """Up to `limit` runs older than `after`, newest first, whose stats hash `keep` accepts (all
    if None), and where the next page starts (None at the end of the index). Index entries whose
    stats hash has expired, or that are not run ids, are skipped. `indexes`: the run index, or
    the per-owner and per-team indexes a principal may see (merged, each run once)."""
    runs: list[RunSnapshot] = []
    position = after
    examined = 0
    while True:
        want = limit - len(runs)
        # One entry more than needed tells a full last page from a page with runs after it.
        count = want + 1 if keep is None else min(max(want + 1, FILTER_BATCH), SCAN_BUDGET - examined)
        rows, at_end = await _merged_rows(redis, indexes, position, count)
        for (member, score), stats in zip(rows, await _stats_hashes(redis, rows), strict=True):
            if len(runs) == limit:
                return runs, position
            skip = position.skip + 1 if position is not None and position.score == score else 1
            position = IndexPosition(score, skip)
            examined += 1
            if stats and (keep is None or keep(stats)):
                runs.append(RunSnapshot.from_hash(member.decode(), stats))
        if at_end:
            return runs, None
        if len(runs) == limit or examined >= SCAN_BUDGET:
            return runs, position


async def _merged_rows(
    redis: Redis, indexes: Sequence[str], after: IndexPosition | None, count: int
) -> tuple[list[Row], bool]:
    """`_index_rows` over several indexes: newest first, a run in two of them once."""
    if len(indexes) == 1:
        return await _index_rows(redis, indexes[0], after, count)
    parts = [await _index_rows(redis, key, after, count) for key in indexes]
    merged = sorted(
        {m: (m, s) for rows, _ in parts for m, s in rows}.values(), key=lambda r: (r[1], r[0]), reverse=True
    )
    return merged[:count], len(merged) <= count and all(at_end for _, at_end in parts)


async def _index_rows(redis: Redis, key: str, after: IndexPosition | None, count: int) -> tuple[list[Row], bool]:
    """Up to `count` index entries after `after`, newest first, and whether the index ends there."""
    if after is None:
        rows: list[Row] = await redis.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
        return rows, len(rows) < count
    async with redis.pipeline(transaction=False) as pipe:
        # The cursor's own millisecond, in index order, minus the entries already paged past. A
        # millisecond holds a handful of runs at most, so it is read whole. (A run added to that
        # millisecond after the page was read could shift it by one: runs are scored by their
        # creation time, so it would have to be created within the same millisecond.)
        pipe.zrevrangebyscore(key, after.score, after.score)
        pipe.zrevrangebyscore(key, f"({after.score!r}", "-inf", start=0, num=count, withscores=True)
        ties, older = await pipe.execute()
    rows = [(m, after.score) for m in ties[after.skip :]] + older
    return rows[:count], len(rows) <= count and len(older) < count


async def _stats_hashes(redis: Redis, rows: list[Row]) -> list[dict[str, str]]:
    """Each row's decoded stats hash (empty if expired or not a run), in one pipeline."""
    run_ids = [_run_id_or_none(member) for member, _ in rows]
    async with redis.pipeline(transaction=False) as pipe:
        for rid in run_ids:
            if rid is not None:
                pipe.hgetall(keys.run_stats(rid))
        replies = iter(await pipe.execute())
    return [{} if rid is None else _decode(next(replies)) for rid in run_ids]


def _run_id_or_none(member: bytes) -> RunId | None:
    try:
        return validate_run_id(member.decode("ascii"))
    except (UnicodeDecodeError, InvalidRunId):
        return None


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def exclusive_start(after: str) -> str | None:
    """The XRANGE start just after stream id `after` (`ms` or `ms-seq`), or None when no id can
    follow it. Raises ValueError for an id Redis would refuse (a part beyond 64 bits)."""
    sid = parse_stream_id(after)
    if sid == (STREAM_ID_PART_MAX, STREAM_ID_PART_MAX):
        return None
    return f"({format_stream_id(sid)}"


async def read_event_page(
    redis: Redis, run_id: RunId, *, after: str | None, start: str | None, limit: int
) -> EventPage | None:
    """Up to `limit` events from XRANGE `start` ('-' = from the beginning; None = nothing can
    follow), or None if the run does not exist. Malformed entries are counted and skipped. The
    page says where the retained history starts and whether it continues from `after` (the
    position asked for, which `start` was made from)."""
    stream = keys.run_events(run_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.run_stats(run_id))
        pipe.xrange(stream, count=1)  # same snapshot as the page: one pipeline, no command between
        if start is not None:
            pipe.xrange(stream, min=start, max="+", count=limit + 1)
        exists, first, *replies = await pipe.execute()
    if not exists:
        return None
    entries: list[tuple[bytes, dict[bytes, bytes]]] = replies[0] if replies else []
    more = len(entries) > limit
    entries = entries[:limit]
    invalid: list[InvalidEvent] = []
    events = [e for entry_id, fields in entries if (e := decode_entry(entry_id, fields, invalid.append)) is not None]
    if invalid:
        log.warning("run %s: %d stream entries are not livestats events (first: %s)", run_id, len(invalid), invalid[0])
    next_after = entries[-1][0].decode() if more else None
    first_id, first_seq = _first(first)
    trimmed = first_seq is not None and first_seq > 1
    gap = trimmed and first_id is not None and (after is None or parse_stream_id(after) < parse_stream_id(first_id))
    return EventPage(
        events=events,
        next=next_after,
        skipped=len(invalid),
        after=after,
        first_id=first_id,
        first_seq=first_seq,
        trimmed=trimmed,
        gap=gap,
    )


def _first(reply: list[tuple[bytes, dict[bytes, bytes]]]) -> tuple[str | None, int | None]:
    """The id and seq of the stream's oldest entry (seq None if it is not a livestats event)."""
    if not reply:
        return None, None
    entry_id, fields = reply[0]
    seq = fields.get(b"seq", b"")
    return entry_id.decode(), int(seq) if seq.isdigit() else None
