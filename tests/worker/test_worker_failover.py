"""A real worker (arq, FPF processes) whose Sentinel-managed primary is SIGKILLed mid-run: with
replica acknowledgement on, the run ends as if nothing had happened."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from livestats_shared.control import submit_run
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.redis_client import UNAVAILABLE
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.stats import PRODUCER_PREFIX, fold

pytestmark = [pytest.mark.sentinel, pytest.mark.slow]  # a run outlasting a failover


@pytest.fixture
def redis_url(sentinel_set) -> str:
    """Every fixture of this module (redis, publisher, start_worker) on a primary it may kill."""
    return str(sentinel_set.url)


async def count_events(redis, run_id: str) -> Counter:
    """The run's events by type, asking again while there is no primary."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return Counter(e.type for e in await read_events(redis, run_id))
        except UNAVAILABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)  # the failover is under way


async def until(redis, run_id: str, check) -> Counter:
    deadline = time.monotonic() + 120
    while not check(types := await count_events(redis, run_id)):
        assert time.monotonic() < deadline, f"run {run_id}: {types}"
        await asyncio.sleep(0.05)
    return types


@pytest.mark.timeout(240)
async def test_a_run_whose_primary_is_killed_mid_run_ends_complete_and_in_order(
    sentinel_set, redis, publisher, start_worker, queue_name
):
    await start_worker(publish_replicas=1, publish_replica_timeout_ms=200)
    calls = 80
    env = {"FPF_SIM_LATENCY_MS": "150", "FPF_SIM_JITTER_MS": "20"}
    spec = RunSpec(name="failover", phases=[PhaseSpec(name="generate", calls=calls, concurrency=2, env=env)])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    before = await until(redis, run_id, lambda t: t["call.succeeded"] >= 5)
    old = sentinel_set.kill_primary()
    assert before["run.finished"] == 0  # killed mid-run
    await sentinel_set.promoted(old)
    await sentinel_set.revive_as_replica(old)  # acknowledgement needs a replica again
    types = await until(redis, run_id, lambda t: t["run.finished"] == 1)

    events = await read_events(redis, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "run.queued" and events[-1].type == "run.finished"
    assert events[-1].payload().outcome.value == "succeeded"
    assert types["call.succeeded"] == calls and types["call.started"] == calls  # none lost, none twice
    h = await read_stats_hash(redis, run_id)
    assert {k: v for k, v in h.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)
