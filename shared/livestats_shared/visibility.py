"""Who may see a run, as index entries: a sorted set per owner and per team, scored like the run
index (creation time, epoch ms) and pruned the same way, so a principal's run list reads only
what it may see instead of filtering everyone's runs."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys


def index_visibility(pipe: Pipeline, run_id: str, ts: int, fields: Mapping[str, str], retention_s: int) -> None:
    """Queue the per-owner and per-team index writes for a new run (`fields`: its stats delta)."""
    targets = []
    if owner := fields.get("owner"):
        targets.append(keys.runs_by_owner(owner))
    if team := fields.get("team"):
        targets.append(keys.runs_by_team(team))
    for key in targets:
        pipe.zadd(key, {run_id: ts}, nx=True)
        pipe.zremrangebyscore(key, "-inf", ts - retention_s * 1000)


BACKFILL_BATCH = 500  # run index entries per round trip


async def backfill_visibility(redis: Redis) -> int:
    """Index runs recorded before the per-principal indexes existed; once per deployment (a
    marker key records it). Idempotent: entries are added with NX. Returns runs indexed."""
    if await redis.exists(keys.RUNS_VISIBILITY_MARK):
        return 0
    done, start = 0, 0
    while True:
        members = await redis.zrange(keys.RUNS_INDEX, start, start + BACKFILL_BATCH - 1, withscores=True)
        if not members:
            break
        start += len(members)
        run_ids = [m.decode() for m, _ in members]
        async with redis.pipeline(transaction=False) as pipe:
            for rid in run_ids:
                pipe.hmget(keys.run_stats(rid), ["owner", "team"])
            owners = await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for (rid, (_, score)), (owner, team) in zip(zip(run_ids, members, strict=True), owners, strict=True):
                if owner:
                    pipe.zadd(keys.runs_by_owner(owner.decode()), {rid: score}, nx=True)
                if team:
                    pipe.zadd(keys.runs_by_team(team.decode()), {rid: score}, nx=True)
                done += bool(owner or team)
            await pipe.execute()
    await redis.set(keys.RUNS_VISIBILITY_MARK, "1")
    return done
