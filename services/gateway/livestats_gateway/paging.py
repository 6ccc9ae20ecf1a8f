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

from .schemas import EventPage
from .wire import STREAM_ID_PART_MAX, format_stream_id, parse_stream_id

log = logging.getLogger("livestats.gateway.api")

# Index entries one request examines at most: a filter that matches few runs answers a
# short page with a cursor instead of reading 30 days of runs in one request.
SCAN_BUDGET = 5_000  # index entries
FILTER_BATCH = 200  # index entries read per round trip while a filter skips runs
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
STREAM_ID_PATTERN = r"^[0-9]+(-[0-9]+)?$"

Row = tuple[bytes, float]  # (member, score) of the run index


@dataclass(frozen=True)
class IndexPosition:
    """The last run index entry a page examined. Entries with equal scores (runs created in the
    same millisecond) are ordered by member, so (score, member) orders the index totally. The
    member is kept as raw bytes: a cursor must get past anything someone ZADDed by hand."""

    score: float
    member: bytes

    def encode(self) -> str:
        raw = repr(self.score).encode() + b" " + self.member
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> IndexPosition:
        """Raises ValueError for a cursor `encode` did not produce."""
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))  # binascii.Error is a ValueError
        score, sep, member = raw.partition(b" ")
        value = float(score)
        if not sep or math.isnan(value):
            raise ValueError("not a cursor from this API")
        return cls(value, member)


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
            position = IndexPosition(score, member)
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
        # Entries in the cursor's own millisecond follow it when their member sorts lower. A
        # millisecond holds a handful of runs at most, so they are read whole.
        pipe.zrangebyscore(key, after.score, after.score)
        pipe.zrevrangebyscore(key, f"({after.score!r}", "-inf", start=0, num=count, withscores=True)
        ties, older = await pipe.execute()
    rows = [(m, after.score) for m in sorted(ties, reverse=True) if m < after.member] + older
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


async def read_event_page(redis: Redis, run_id: RunId, *, start: str | None, limit: int) -> EventPage | None:
    """Up to `limit` events from XRANGE `start` ('-' = from the beginning; None = nothing can
    follow), or None if the run does not exist. Malformed entries are counted and skipped."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.run_stats(run_id))
        if start is not None:
            pipe.xrange(keys.run_events(run_id), min=start, max="+", count=limit + 1)
        exists, *replies = await pipe.execute()
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
    return EventPage(events=events, next=next_after, skipped=len(invalid))
