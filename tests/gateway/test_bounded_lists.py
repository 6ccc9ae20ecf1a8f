"""A principal's run list reads only runs it may see: the per-owner and per-team indexes."""

from __future__ import annotations

import uuid

from livestats_shared import keys
from livestats_shared.control import submit_run
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.visibility import backfill_visibility

OTHERS = 5_000


async def _foreign_runs(redis, n: int) -> list[str]:
    """`n` runs of another user, newest of all, written directly (publishing 5,000 takes long)."""
    base = 4_000_000_000_000  # epoch ms far ahead: newer than any run of the suite
    ids = [f"foreign-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    async with redis.pipeline(transaction=False) as pipe:
        for i, rid in enumerate(ids):
            pipe.zadd(keys.RUNS_INDEX, {rid: base + i})
            pipe.hset(keys.run_stats(rid), mapping={"status": "queued", "owner": "mallory", "name": "x"})
        await pipe.execute()
    return ids


async def _hgetall_calls(redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_a_user_who_sees_none_of_the_newest_runs_does_not_read_them(
    gateway, make_token, redis, publisher, queue_name
):
    spec = RunSpec(name="mine", phases=[PhaseSpec(name="generate", calls=1)])
    mine = {await submit_run(redis, publisher, spec, queue_name=queue_name, owner="alice-bl") for _ in range(3)}
    shared = await submit_run(redis, publisher, spec, queue_name=queue_name, owner="bob-bl", team="ml-bl")
    foreign = await _foreign_runs(redis, OTHERS)
    try:
        token = await make_token("alice-bl", "read", teams=["ml-bl"])
        async with gateway.client(token) as client:
            before = await _hgetall_calls(redis)
            page = (await client.get("/api/runs", params={"limit": 10})).json()
            read = await _hgetall_calls(redis) - before
        assert {r["run_id"] for r in page["runs"]} == mine | {shared} and page["next"] is None
        # Her 4 runs' stats and little else (the gateway's own loops run meanwhile); the run
        # index would have meant 5,000.
        assert read < 100, read
        async with gateway.client() as admin:  # the admin's list still reads the whole index
            newest = (await admin.get("/api/runs", params={"limit": 1})).json()["runs"]
        assert newest[0]["run_id"] == foreign[-1]
    finally:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.RUNS_INDEX, *foreign)
            pipe.delete(*(keys.run_stats(r) for r in foreign))
            await pipe.execute()


async def test_runs_recorded_before_the_indexes_are_backfilled_once(redis, publisher, queue_name):
    spec = RunSpec(name="old", phases=[PhaseSpec(name="generate", calls=1)])
    rid = await submit_run(redis, publisher, spec, queue_name=queue_name, owner="carol-bl", team="ops-bl")
    await redis.delete(keys.runs_by_owner("carol-bl"), keys.runs_by_team("ops-bl"), keys.RUNS_VISIBILITY_MARK)
    assert await backfill_visibility(redis) >= 1
    assert await redis.zscore(keys.runs_by_owner("carol-bl"), rid) == await redis.zscore(keys.RUNS_INDEX, rid)
    assert await redis.zscore(keys.runs_by_team("ops-bl"), rid) is not None
    assert await backfill_visibility(redis) == 0  # marked done
