"""Stalled runs: a run whose heartbeats stop is finished `stalled`, once, by one gateway."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import AsyncExitStack

import pytest
from helpers import wait_finished, wait_for_event, wait_until
from livestats_gateway.config import GatewayConfig
from livestats_gateway.ops.stalls import StallMonitor
from livestats_shared import keys
from livestats_shared.control import submit_run
from livestats_shared.events import Heartbeat, Outcome, PhasePlan, RunFinished, RunQueued, RunStarted
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.publish import NO_RUN
from livestats_shared.redis_client import connect
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.stats import RunSnapshot
from proc_util import pids_with_env

STALLS_LOG = "livestats.gateway.stalls"


@pytest.fixture
async def open_monitor(redis_url, publisher):
    """Start StallMonitors (each with its own client, like separate gateways); all stop at teardown."""
    async with AsyncExitStack() as stack:

        async def open_(**overrides: object) -> StallMonitor:
            settings = {"stall_check_interval_s": 0.1, "stall_margin_s": 0.2, **overrides}
            config = GatewayConfig(redis_url=redis_url, **settings)  # type: ignore[arg-type]
            client = connect(redis_url, "livestats.tests.stalls")
            stack.push_async_callback(client.aclose)
            return await stack.enter_async_context(StallMonitor(config, client, publisher))

        yield open_


async def start_silent_run(publisher, run_id: str, *, silent_for_s: float, heartbeat_s: float | None) -> str:
    """A run that started `silent_for_s` ago and has not been heard from since (no worker)."""
    started_ms = int(time.time() * 1000 - silent_for_s * 1000)
    queued = RunQueued(name="silent", planned_calls=1, phases=[PhasePlan(name="generate", calls=1)], timeout_s=600)
    await publisher.publish(run_id, queued, guard=(NO_RUN,), ts=started_ms - 10)
    started = RunStarted(
        worker="ghost:1", timeout_s=600, deadline_ts=started_ms + 600_000, retry_budget=0, heartbeat_s=heartbeat_s
    )
    await publisher.publish(run_id, started, guard=("queued",), ts=started_ms)
    return run_id


async def eventually(check, timeout_s: float, what: str) -> None:
    """Poll an async check (wait_until's twin for conditions that need Redis)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.05)


async def finished_events(redis, run_id: str) -> list:
    return [e.payload() for e in await read_events(redis, run_id) if e.type == "run.finished"]


async def _not_active(redis, member: str) -> bool:
    return await redis.zscore(keys.RUNS_ACTIVE, member) is None


async def test_a_worker_killed_with_sigkill_mid_run_is_marked_stalled_by_the_gateway(
    redis, publisher, start_worker_process, start_gateway, queue_name, marker
):
    gateway = start_gateway(stall_margin_s=0.5)
    proc, _ = await start_worker_process()
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=2, concurrency=2, env={"FPF_SIM_BEHAVIOUR": "hang"})])
    run_id = await submit_run(redis, publisher, spec, run_id=marker, queue_name=queue_name)
    await wait_for_event(redis, run_id, "heartbeat", 20)
    assert RunSnapshot.from_hash(run_id, await read_stats_hash(redis, run_id)).heartbeat_s == 0.5

    proc.kill()  # no cleanup code runs in the worker: only its silence tells
    await proc.wait()
    # Due two heartbeats (1 s) + margin (0.5 s) after the last beat; the bound is generous.
    finished = (await wait_finished(redis, run_id, 30)).payload()
    assert (finished.outcome.value, finished.reason) == ("stalled", "heartbeats_stopped")
    assert "no heartbeat for" in finished.detail and "(worker " in finished.detail

    snapshot = RunSnapshot.from_hash(run_id, await read_stats_hash(redis, run_id))
    assert (snapshot.status, snapshot.outcome) == ("stalled", "stalled")
    # The index follows the event in a round trip of its own, just after it.
    await eventually(lambda: _not_active(redis, run_id), 2, f"run {run_id} still in the active set")
    # Counted once the publish returns in the gateway's own thread, which may come after this
    # test has seen the event in Redis (a loaded machine).
    stalls = gateway.app_state["stalls"]
    await wait_until(lambda: stalls.stalled_marked >= 1, timeout_s=30)
    scans = stalls.scans
    await wait_until(lambda: stalls.scans >= scans + 3, timeout_s=30)  # a few more checks: none may finish it again
    assert len(await finished_events(redis, run_id)) == 1
    await wait_until(lambda: pids_with_env("FPF_RUN_ID", run_id) == [], timeout_s=5)


@pytest.mark.cluster
async def test_two_gateways_mark_a_silent_run_stalled_exactly_once(redis, publisher, start_gateway):
    gateways = [start_gateway(stall_check_interval_s=0.1, stall_margin_s=0.2) for _ in range(2)]
    run_id = await start_silent_run(publisher, f"silent-{uuid.uuid4().hex[:12]}", silent_for_s=5, heartbeat_s=0.2)
    finished = (await wait_finished(redis, run_id, 30)).payload()
    assert (finished.outcome.value, finished.reason) == ("stalled", "heartbeats_stopped")
    assert "worker ghost:1" in finished.detail

    def total_scans() -> int:
        return sum(g.app_state["stalls"].scans for g in gateways)

    scans = total_scans()
    await wait_until(lambda: total_scans() >= scans + 5, timeout_s=30)  # several checks after the mark
    assert len(await finished_events(redis, run_id)) == 1
    assert sum(g.app_state["stalls"].leader for g in gateways) <= 1


async def test_two_monitors_scanning_at_the_same_moment_publish_one_run_finished(
    redis, publisher, open_monitor, caplog, monkeypatch
):
    # Both scan outside the lease here, as an old leader paused past its TTL would.
    first, second = await open_monitor(stall_check_interval_s=60), await open_monitor(stall_check_interval_s=60)
    run_id = await start_silent_run(publisher, f"race-{uuid.uuid4().hex[:12]}", silent_for_s=5, heartbeat_s=0.05)
    await asyncio.sleep(0.35)  # monitors count silence from when they started: past 2 * 0.05 + 0.2

    # Hold each mark until both monitors have decided to mark, so they really race.
    real_publish, deciding, both_decided = publisher.publish_all, [], asyncio.Event()

    async def publish_once_both_decided(rid, events, **kwargs):
        if rid == run_id and events[-1].TYPE == "run.finished":
            deciding.append(rid)
            if len(deciding) == 2:
                both_decided.set()
            await asyncio.wait_for(both_decided.wait(), 5)
        return await real_publish(rid, events, **kwargs)

    monkeypatch.setattr(publisher, "publish_all", publish_once_both_decided)
    with caplog.at_level(logging.DEBUG, logger=STALLS_LOG):
        await asyncio.gather(first.scan(), second.scan())

    assert len(deciding) == 2
    assert len(await finished_events(redis, run_id)) == 1
    about_run = [r for r in caplog.records if r.name == STALLS_LOG and run_id in r.getMessage()]
    marked = [r for r in about_run if r.levelno == logging.WARNING and "stalled:" in r.getMessage()]
    refused = [r for r in about_run if r.levelno == logging.DEBUG and "not marked stalled" in r.getMessage()]
    assert (len(marked), len(refused)) == (1, 1)


async def test_a_run_whose_heartbeats_keep_coming_is_never_marked_until_they_stop(redis, publisher, open_monitor):
    monitor = await open_monitor()
    run_id = await start_silent_run(publisher, f"alive-{uuid.uuid4().hex[:12]}", silent_for_s=0, heartbeat_s=0.2)
    scans_before = monitor.scans
    # Beat for 2.5 x the allowed silence (2 * 0.2 + 0.2) and through 5 of the monitor's scans.
    beat_until = time.monotonic() + 1.5
    while time.monotonic() < beat_until or monitor.scans < scans_before + 5:
        await publisher.publish(run_id, Heartbeat(elapsed_s=0, remaining_s=600, in_flight=0, pids=[]))
        await asyncio.sleep(0.1)
        assert time.monotonic() < beat_until + 30, "the monitor stopped scanning"
    assert await finished_events(redis, run_id) == []

    finished = (await wait_finished(redis, run_id, 30)).payload()
    assert finished.outcome.value == "stalled"


async def test_a_queued_run_is_never_marked_stalled(redis, publisher, open_monitor):
    monitor = await open_monitor()
    run_id = f"queued-{uuid.uuid4().hex[:12]}"
    queued = RunQueued(name="waiting", planned_calls=1, phases=[PhasePlan(name="generate", calls=1)], timeout_s=60)
    await publisher.publish(run_id, queued, ts=int(time.time() * 1000) - 60_000)  # queued long ago
    scans_before = monitor.scans
    await wait_until(lambda: monitor.scans >= scans_before + 5, timeout_s=5)
    assert (await read_stats_hash(redis, run_id))["status"] == "queued"
    assert await finished_events(redis, run_id) == []


async def test_a_run_enters_the_active_set_when_it_starts_and_leaves_when_it_finishes(redis, publisher):
    run_id = await start_silent_run(publisher, f"life-{uuid.uuid4().hex[:12]}", silent_for_s=0, heartbeat_s=5)
    assert await redis.zscore(keys.RUNS_ACTIVE, run_id) is not None
    await publisher.publish(run_id, RunFinished(outcome=Outcome.SUCCEEDED, reason="completed"), guard=("running",))
    assert await redis.zscore(keys.RUNS_ACTIVE, run_id) is None


async def test_the_monitor_drops_runs_that_are_no_longer_running_from_the_active_set(redis, publisher, open_monitor):
    finished = await start_silent_run(publisher, f"done-{uuid.uuid4().hex[:12]}", silent_for_s=0, heartbeat_s=5)
    await publisher.publish(finished, RunFinished(outcome=Outcome.SUCCEEDED, reason="completed"))
    expired = f"expired-{uuid.uuid4().hex[:12]}"  # no stats hash any more
    junk = "Not A Run Id"
    # As if the index update after each had been lost.
    await redis.zadd(keys.RUNS_ACTIVE, {finished: 1, expired: 1, junk: 1})
    await open_monitor()

    async def gone() -> bool:
        return all([await _not_active(redis, m) for m in (finished, expired, junk)])

    await eventually(gone, 3, "the monitor did not clean up the active set")
    assert len(await finished_events(redis, finished)) == 1  # not marked stalled on top


async def test_one_monitor_holds_the_lease_and_another_takes_over_when_it_stops(redis, redis_url, publisher):
    config = GatewayConfig(redis_url=redis_url, stall_check_interval_s=0.2)  # lease TTL 0.6 s
    clients = [connect(redis_url, "livestats.tests.stalls") for _ in range(2)]
    try:
        first, second = (StallMonitor(config, c, publisher) for c in clients)
        async with first, second:
            await wait_until(lambda: first.leader or second.leader, timeout_s=3)
            for _ in range(10):  # never both, and the key names the one that leads
                leaders = [m for m in (first, second) if m.leader]
                assert len(leaders) == 1  # renewals in flight do not make it flicker
                assert await redis.get(keys.STALL_LEADER) == leaders[0].lease.token.encode()
                await asyncio.sleep(0.05)
            leader, other = (first, second) if first.leader else (second, first)
            await leader.__aexit__(None, None, None)  # a gateway that stops releases the lease
            assert not leader.alive()
            # Released, not left to lapse: the key is gone, or the other monitor's already.
            assert await redis.get(keys.STALL_LEADER) in (None, other.lease.token.encode())
            await wait_until(lambda: other.leader, timeout_s=2)
            assert (await redis.get(keys.STALL_LEADER)).decode() == other.lease.token
        assert await redis.get(keys.STALL_LEADER) is None
    finally:
        for client in clients:
            await client.aclose()


async def test_runs_silent_during_a_redis_outage_are_not_marked_the_moment_it_returns(
    redis_server, redis, publisher, open_monitor
):
    server = redis_server.require_control()
    monitor = await open_monitor(stall_margin_s=0.5)  # allowed silence: 2 * 0.25 + 0.5 = 1 s
    run_id = await start_silent_run(publisher, f"outage-{uuid.uuid4().hex[:12]}", silent_for_s=0, heartbeat_s=0.25)
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(1.5)  # longer than the allowed silence; no worker can reach Redis either
    scans_before = monitor.scans
    server.start()  # from this thread: the server dies with the thread that started it
    await wait_until(lambda: monitor.scans > scans_before, timeout_s=5)
    # The worker's buffered heartbeats land a moment later; the monitor was still counting.
    await publisher.publish(run_id, Heartbeat(elapsed_s=2, remaining_s=600, in_flight=0, pids=[]))
    scans = monitor.scans
    await wait_until(lambda: monitor.scans > scans, timeout_s=30)  # it looked again, heartbeat in place
    assert await finished_events(redis, run_id) == []
    assert monitor.alive()


async def test_an_unexpected_error_in_the_monitor_is_logged_and_reported_by_alive(open_monitor, caplog, monkeypatch):
    async def broken_scan() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(StallMonitor, "scan", lambda self: broken_scan())
    with caplog.at_level(logging.CRITICAL, logger=STALLS_LOG):
        monitor = await open_monitor()
        await wait_until(lambda: not monitor.alive(), timeout_s=3)
    [record] = [r for r in caplog.records if r.name == STALLS_LOG and r.levelno == logging.CRITICAL]
    assert "stall monitor stopped" in record.getMessage()
    assert record.exc_info is not None and "a bug" in str(record.exc_info[1])
