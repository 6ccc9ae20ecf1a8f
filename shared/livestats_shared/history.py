"""Reading a run back: its events from the stream and its snapshot from the stats hash."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from redis.asyncio import Redis

from . import keys
from .errors import InvalidEvent
from .events import Event
from .stats import RunSnapshot

OnInvalid = Callable[[InvalidEvent], None]


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes], on_invalid: OnInvalid | None) -> Event | None:
    """One stream entry as an Event. A malformed entry (someone XADDed by hand) raises
    InvalidEvent, or, with `on_invalid`, is reported there and skipped."""
    try:
        event = Event.from_stream_entry(entry_id, fields)
        event.payload()
    except InvalidEvent as exc:
        if on_invalid is None:
            raise
        on_invalid(exc)
        return None
    return event


async def iter_events(
    redis: Redis, run_id: str, *, after: str = "-", page: int = 1_000, on_invalid: OnInvalid | None = None
) -> AsyncIterator[Event]:
    """Every event of the run after stream id `after` ('-' = from the start), oldest first."""
    stream = keys.run_events(run_id)
    start = after if after == "-" else f"({after}"
    while True:
        entries = await redis.xrange(stream, min=start, max="+", count=page)
        for entry_id, fields in entries:
            event = decode_entry(entry_id, fields, on_invalid)
            if event is not None:
                yield event
        if len(entries) < page:
            return
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)


async def read_events(redis: Redis, run_id: str, *, after: str = "-") -> list[Event]:
    return [e async for e in iter_events(redis, run_id, after=after)]


async def read_stats_hash(redis: Redis, run_id: str) -> dict[str, str]:
    """The raw stats hash, decoded; empty if the run does not exist (or has expired)."""
    # redis-py types async commands as `Awaitable[T] | T`; the asyncio client always awaits.
    raw = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.run_stats(run_id)))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def read_snapshot(redis: Redis, run_id: str) -> RunSnapshot | None:
    """The run's current snapshot, or None if the run does not exist (or has expired)."""
    raw = await read_stats_hash(redis, run_id)
    return RunSnapshot.from_hash(run_id, raw) if raw else None


async def read_status(redis: Redis, run_id: str) -> str | None:
    raw = await cast(Awaitable[bytes | None], redis.hget(keys.run_stats(run_id), "status"))
    return None if raw is None else raw.decode()
