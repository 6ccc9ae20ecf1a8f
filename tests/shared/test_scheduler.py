"""The fair-share scheduler's decisions, against a real server (no worker: slots are advertised
by hand, so each dispatch is observed exactly in arq's queue)."""

from __future__ import annotations

import time

import pytest
from livestats_shared import keys
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.quota import Quota, QuotaExceeded
from livestats_shared.sched import Scheduler
from livestats_shared.spec import PhaseSpec, RunSpec

SPEC = RunSpec(name="sched", phases=[PhaseSpec(name="generate", calls=1)])


async def due(redis, queue_name: str) -> set[str]:
    """Run ids arq would start now (score <= now); parked ones are far in the future."""
    now = int(time.time() * 1000)
    return {m.decode() for m in await redis.zrangebyscore(queue_name, "-inf", now)}


async def finish(redis, sched: Scheduler, run_id: str) -> bool:
    """What a worker does when a job ends: arq drops it from its queue, the job frees its slot."""
    await redis.zrem(sched.queue_name, run_id)
    return await sched.release(run_id)


async def submit(redis, publisher, queue_name, owner, n=1, **quota) -> list[str]:
    return [
        await submit_run(redis, publisher, SPEC, queue_name=queue_name, owner=owner, quota=Quota(**quota))
        for _ in range(n)
    ]


async def test_without_a_worker_nothing_is_dispatched_and_the_run_says_why(redis, publisher, queue_name):
    [run] = await submit(redis, publisher, queue_name, "alice")
    assert await due(redis, queue_name) == set()
    assert await redis.zscore(queue_name, run) is not None  # parked in arq's queue
    place = await Scheduler(redis, queue_name).place(run)
    assert place is not None and place.state == "pending" and place.position == 1
    assert place.reason == "waiting for a worker: none is running"


async def test_a_backlog_of_one_principal_does_not_delay_another(redis, publisher, queue_name):
    sched = Scheduler(redis, queue_name)
    await sched.advertise("w1", 2, 60)
    alice = await submit(redis, publisher, queue_name, "alice", 6)
    assert await due(redis, queue_name) == set(alice[:2])  # the two slots, in submission order
    [bob] = await submit(redis, publisher, queue_name, "bob")
    assert bob not in await due(redis, queue_name)
    place = await sched.place(bob)
    assert place is not None and place.reason == "waiting for a free worker slot"
    assert (await sched.place(alice[3])).reason == "2nd in your queue"

    assert await finish(redis, sched, alice[0])  # a slot frees: bob's turn, not alice's third run
    assert await due(redis, queue_name) == {alice[1], bob}
    assert not await sched.release(alice[0])  # idempotent
    assert await finish(redis, sched, bob)
    assert await due(redis, queue_name) == {alice[1], alice[2]}


async def test_principals_take_turns_least_recently_served_first(redis, publisher, queue_name):
    sched = Scheduler(redis, queue_name)
    a = await submit(redis, publisher, queue_name, "alice", 3)
    b = await submit(redis, publisher, queue_name, "bob", 3)
    c = await submit(redis, publisher, queue_name, "carol", 1)
    await sched.advertise("w1", 5, 60)
    assert await due(redis, queue_name) == {a[0], b[0], c[0], a[1], b[1]}


async def test_a_principal_at_its_concurrent_limit_waits_while_others_use_the_slots(redis, publisher, queue_name):
    sched = Scheduler(redis, queue_name)
    await sched.advertise("w1", 4, 60)
    alice = await submit(redis, publisher, queue_name, "alice", 3, concurrent_runs=1)
    assert await due(redis, queue_name) == {alice[0]}
    assert (await sched.place(alice[1])).reason == "your 1 concurrent runs are at the limit"
    [bob] = await submit(redis, publisher, queue_name, "bob")
    assert await due(redis, queue_name) == {alice[0], bob}
    await finish(redis, sched, alice[0])
    assert await due(redis, queue_name) == {bob, alice[1]}


async def test_an_expired_advertisement_offers_no_slots(redis, publisher, queue_name):
    sched = Scheduler(redis, queue_name)
    await sched.advertise("gone", 3, 0)  # expires at once, as a killed worker's does
    await submit(redis, publisher, queue_name, "alice", 2)
    assert await due(redis, queue_name) == set()
    await sched.advertise("w1", 1, 60)
    assert len(await due(redis, queue_name)) == 1


async def test_cancel_takes_a_waiting_run_out_of_its_queue_and_frees_a_dispatched_slot(redis, publisher, queue_name):
    sched = Scheduler(redis, queue_name)
    await sched.advertise("w1", 1, 60)
    first, second, third = await submit(redis, publisher, queue_name, "alice", 3)
    assert await due(redis, queue_name) == {first}
    assert await cancel_run(redis, publisher, second, queue_name=queue_name) == "cancelled"
    assert await redis.lrange(keys.sched_pending(queue_name, "alice"), 0, -1) == [third.encode()]
    assert await redis.zscore(queue_name, second) is None
    # Dispatched but not started by a worker: leaves arq's queue and its slot goes to the next.
    assert await cancel_run(redis, publisher, first, queue_name=queue_name) == "cancelled"
    assert await due(redis, queue_name) == {third}
    assert await sched.place(first) is None


async def test_submissions_over_the_rate_are_refused_with_the_wait_until_one_leaves_the_window(
    redis, publisher, queue_name
):
    await submit(redis, publisher, queue_name, "alice", 3, submissions_per_minute=3)
    with pytest.raises(QuotaExceeded) as refused:
        await submit(redis, publisher, queue_name, "alice", submissions_per_minute=3)
    assert refused.value.which == "submissions_per_minute"
    assert 55 <= refused.value.retry_after_s <= 60  # the first submission leaves the window then
    await submit(redis, publisher, queue_name, "bob", submissions_per_minute=3)  # per principal


async def test_a_full_queue_refuses_until_a_run_is_dispatched(redis, publisher, queue_name):
    await submit(redis, publisher, queue_name, "alice", 2, queued_runs=2)
    with pytest.raises(QuotaExceeded) as refused:
        await submit(redis, publisher, queue_name, "alice", queued_runs=2)
    assert refused.value.which == "queued_runs" and refused.value.retry_after_s >= 1
    await Scheduler(redis, queue_name).advertise("w1", 1, 60)  # one leaves the queue
    await submit(redis, publisher, queue_name, "alice", queued_runs=2)


async def test_the_scripts_build_the_pending_key_the_keys_module_names(redis, publisher, queue_name):
    [run] = await submit(redis, publisher, queue_name, "alice")
    assert await redis.lrange(keys.sched_pending(queue_name, "alice"), 0, -1) == [run.encode()]
    assert await redis.hget(keys.sched_key(queue_name, "owner"), run) == b"alice"
    names = {k.decode() for k in await redis.keys(keys.sched_prefix(queue_name) + ":*")}
    known = {keys.sched_key(queue_name, n) for n in keys.SCHED_KEYS} | {
        f(queue_name, "alice") for f in (keys.sched_pending, keys.sched_reserved, keys.sched_submissions)
    }
    assert names and names <= known
