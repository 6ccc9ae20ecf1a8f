"""`/ws/runs/{id}`: late joiners and resuming clients see every event exactly once, in order."""

from __future__ import annotations

import asyncio
import random

import pytest
from helpers import wait_for_event
from livestats_shared.ids import new_run_id
from sentinel_fixtures import on_each_server
from ws_client import RunWatcher, publish_run

pytestmark = pytest.mark.slow  # tens of thousands of events to many clients


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("redis_url", "n"),
    [("server", 20_000), pytest.param("sentinel", 2_000, marks=pytest.mark.sentinel)],  # the joins, not the volume
    indirect=["redis_url"],
)
async def test_fifty_clients_joining_at_random_moments_each_receive_every_event_once(gateway, publisher, redis, n):
    run_id = new_run_id()
    producer = asyncio.create_task(publish_run(publisher, run_id, n))
    await wait_for_event(redis, run_id, "run.queued", 30)  # the run exists before the first client joins

    async def late_joiner(delay: float) -> RunWatcher:
        await asyncio.sleep(delay)
        watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
        await watcher.session(until_seq=n, timeout_s=240)  # 1M deliveries: minutes on a loaded machine
        return watcher

    watchers = await asyncio.gather(*(late_joiner(random.uniform(0, 1.5)) for _ in range(50)))
    await producer
    for w in watchers:
        assert w.seqs == list(range(1, n + 1))
        assert w.types[0] == "run.queued" and w.types[-1] == "run.finished"
        assert [c["type"] for c in w.controls][:1] == ["hello"]
        assert not [c for c in w.controls if c["type"] == "reset"]


@pytest.mark.cluster
@on_each_server
async def test_clients_that_drop_and_resume_at_random_points_see_no_gap_and_no_duplicate(gateway, publisher, redis):
    run_id, n = new_run_id(), 10_000
    producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=100))
    await wait_for_event(redis, run_id, "run.queued", 30)

    async def flaky() -> RunWatcher:
        watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
        while watcher.last_seq < n:
            await watcher.session(until_seq=n, max_frames=random.randint(1, 20), timeout_s=30)
            await asyncio.sleep(random.uniform(0, 0.1))
        return watcher

    watchers = await asyncio.gather(*(flaky() for _ in range(10)))
    await producer
    for w in watchers:
        assert w.seqs == list(range(1, n + 1))  # RunWatcher also checks contiguity frame by frame
        assert w.connects > 1
        hellos = [c for c in w.controls if c["type"] == "hello"]
        assert [h["since"] for h in hellos] == w.sinces  # each reconnect resumed where it stopped
        assert any(w.sinces)
