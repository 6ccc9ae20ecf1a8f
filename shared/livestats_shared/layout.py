"""The key layout a database holds, recorded in it, and checked by every process before it reads
or writes telemetry (docs/keys.md).

`keys.LAYOUT` is a hash: `version` (keys.LAYOUT_VERSION) and `partitions` (P). A process whose
key names would not match what the database holds must not start: it would write runs nobody
finds, or find none of the runs there. So `ensure` (called by the worker, the gateway and every
CLI command that touches telemetry):
- writes the record on an empty database (atomically: of two processes starting at once with
  different P, one wins and the other is refused);
- refuses a database written by layout 1 (no record, but layout 1 keys: legacy_marker): `livestats migrate`;
- refuses while a migration is under way or was interrupted (`migrating` in the record);
- refuses another version, or another partition count, naming both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from . import keys
from .errors import InvalidRunId, LivestatsError
from .ids import validate_run_id
from .redis_client import UNAVAILABLE

log = logging.getLogger("livestats.layout")

MIGRATE_HINT = "stop every worker and gateway, then run `livestats migrate`"
_SAMPLE = 20  # recent runs of each list whose layout 1 names are looked for

# Written only if absent; answered with what is there either way (one key: one slot).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'partitions', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
"""


class LayoutError(LivestatsError):
    """The database's key layout is not the one this process uses: it must not start."""


class LegacyLayout(LayoutError):
    def __init__(self, marker: str) -> None:
        super().__init__(
            f"this database holds keys of livestats key layout 1 (found {marker!r}) and no layout record; "
            f"this version uses layout {keys.LAYOUT_VERSION}: {MIGRATE_HINT}"
        )


class LayoutMigrating(LayoutError):
    def __init__(self, target: str) -> None:
        super().__init__(
            f"a `livestats migrate` to {target} partitions is under way on this database, or was "
            "interrupted: wait for it to end, or run `livestats migrate` again to finish it"
        )


class UnknownLayout(LayoutError):
    def __init__(self, version: str) -> None:
        super().__init__(
            f"this database uses livestats key layout {version!r}; this version knows layout "
            f"{keys.LAYOUT_VERSION} only (a newer livestats wrote it?): run the matching version"
        )


class PartitionMismatch(LayoutError):
    def __init__(self, recorded: int, configured: int) -> None:
        self.recorded = recorded
        self.configured = configured
        super().__init__(
            f"this database's runs are in {recorded} partitions, but this process has "
            f"{keys.PARTITIONS_ENV}={configured}: set {keys.PARTITIONS_ENV}={recorded} on every process "
            f"(or, to re-partition, {MIGRATE_HINT} with {keys.PARTITIONS_ENV}={configured})"
        )


@dataclass(frozen=True)
class Layout:
    version: int
    partitions: int
    created: bool = False  # this call wrote the record (the database was empty)


def _text(raw: dict[bytes, bytes] | list[bytes]) -> dict[str, str]:
    if isinstance(raw, list):  # a script's HGETALL: a flat list
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


async def read_record(redis: Redis) -> dict[str, str]:
    """The layout record as text (empty: none)."""
    return _text(await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(keys.LAYOUT)))


async def legacy_marker(redis: Redis) -> str | None:
    """A layout 1 key that is there, if any: an auth key only layout 1 wrote, or a recent run's
    key under its layout 1 name (a database a publisher wrote before any process recorded the
    layout has runs, an index and a feed too, under layout 2 names: that is not layout 1)."""
    for key in keys.LEGACY_MARKERS:
        if await redis.exists(key):
            return key
    candidates = [keys.legacy_run_key(rid, kind) for rid in await _recent_runs(redis) for kind in ("stats", "events")]
    if not candidates:
        return None
    # One EXISTS per key, pipelined: on a Cluster the names need not share a slot.
    async with redis.pipeline(transaction=False) as pipe:
        for key in candidates:
            pipe.exists(key)
        found = await pipe.execute()
    return next((key for key, there in zip(candidates, found, strict=True) if there), None)


async def _recent_runs(redis: Redis) -> list[str]:
    """Run ids of the newest runs in the index, the active set and the feed (valid ids only)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(keys.RUNS_INDEX, 0, _SAMPLE - 1)
        pipe.zrevrange(keys.RUNS_ACTIVE, 0, _SAMPLE - 1)
        pipe.xrevrange(keys.RUNS_FEED, count=_SAMPLE)
        indexed, active, feed = await pipe.execute()
    raw = [*indexed, *active, *(fields.get(b"run_id", b"") for _, fields in feed)]
    found: dict[str, None] = {}
    for member in raw:
        try:
            found[validate_run_id(member.decode(errors="replace"))] = None
        except InvalidRunId:
            continue  # an entry added by hand: not evidence of either layout
    return list(found)


def check(record: dict[str, str], partitions: int) -> Layout:
    """The layout in `record` if this process may use it, else the LayoutError saying why."""
    if "migrating" in record:
        raise LayoutMigrating(record["migrating"])
    version = record.get("version", "")
    if version != str(keys.LAYOUT_VERSION):
        raise UnknownLayout(version)
    try:
        recorded = int(record.get("partitions", ""))
    except ValueError:
        raise UnknownLayout(f"{version} with partitions {record.get('partitions')!r}") from None
    if recorded != partitions:
        raise PartitionMismatch(recorded, partitions)
    return Layout(keys.LAYOUT_VERSION, recorded)


async def ensure(redis: Redis) -> Layout:
    """Check the database's layout against this process's (write it on an empty database).
    Raises LayoutError if the process must not use this database, Redis errors as they come."""
    partitions = keys.partitions()  # a bad LIVESTATS_PARTITIONS fails here, at start
    record = await read_record(redis)
    if record:
        return check(record, partitions)
    marker = await legacy_marker(redis)
    if marker is not None:
        raise LegacyLayout(marker)
    reply = await cast(
        Awaitable[list[bytes]], redis.eval(_CREATE, 1, keys.LAYOUT, str(keys.LAYOUT_VERSION), str(partitions))
    )
    layout = check(_text(reply), partitions)
    log.info("key layout %d with %d partitions recorded in a new database", layout.version, layout.partitions)
    return Layout(layout.version, layout.partitions, created=True)


async def ensure_when_reachable(redis: Redis, *, attempts: int, delay_s: float = 1.0) -> Layout:
    """`ensure`, retried while Redis is unreachable (a process starting beside its server);
    the last outage is raised after `attempts` tries. A LayoutError is raised at once."""
    for _ in range(attempts - 1):
        try:
            return await ensure(redis)
        except UNAVAILABLE as exc:
            log.warning("key layout not checked, Redis unreachable (%s: %s); retrying", type(exc).__name__, exc)
        await asyncio.sleep(delay_s)
    return await ensure(redis)
