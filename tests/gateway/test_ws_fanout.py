"""Fan-out under load: slow clients, Redis load per viewer, restarts, several gateways."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from helpers import wait_for_event, wait_until
from livestats_shared import keys
from livestats_shared.events import CallFailed, CallStarted, FailureReason, PhasePlan, RunQueued, RunStarted
from livestats_shared.ids import new_run_id
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from ws_client import RunWatcher, beat, open_run, publish_run

pytestmark = pytest.mark.slow  # thousands of events to hundreds of sockets

GATEWAY_READS = ("xread", "xrange", "xrevrange", "hgetall", "exists", "client|unblock", "client|id")


async def _command_calls(redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_client_that_never_reads_is_closed_as_slow_while_fast_clients_keep_up(start_gateway, publisher):
    gateway = start_gateway(client_queue_bytes=256 << 10)
    run_id, n = new_run_id(), 10_000
    await open_run(publisher, run_id, calls=n // 2)  # seq 1-2; then n call events, half of them ~1.2 KB
    # A client library that stops reading from its socket once it holds 4 frames. (The kernel's
    # receive buffer stays small because the application does not read: autotuning follows reads.)
    slow = await connect(
        f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers, max_queue=4, max_size=None
    )
    fast = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(3)]
    readers = [asyncio.create_task(w.session(until_seq=n + 2, timeout_s=60)) for w in fast]
    await wait_until(lambda: all(any(c["type"] == "live" for c in w.controls) for w in fast))

    excerpt = "x" * 1_000  # ~1.2 KB per event: ~6 MB in all, more than the socket buffers take
    hub = gateway.app_state["hub"]
    slow_drain = asyncio.create_task(_read_after(slow, lambda: hub.stats.slow_disconnects > 0))
    for call in range(n // 2):
        publisher.emit(run_id, CallStarted(phase="p", call=call, attempt=1))
        publisher.emit(
            run_id,
            CallFailed(
                phase="p",
                call=call,
                attempt=1,
                reason=FailureReason.EMPTY,
                excerpt=excerpt,
                duration_s=0.1,
                final=False,
            ),
        )
        if call % 100 == 99:
            # The fast readers share this loop (and a busy machine): pace by their progress, not
            # by a rate, so "fast" means "reads", never "was scheduled in time".
            published = 2 + 2 * (call + 1)
            await wait_until(lambda p=published: all(w.close_code is not None or w.last_seq >= p for w in fast), 60)
            assert [w.close_code for w in fast] == [None] * 3
    await asyncio.gather(*readers)
    assert [(w.close_code, len(w.seqs)) for w in fast] == [(None, n + 2)] * 3

    # Once the gateway gave up on it, the slow client reads: a prefix of the run, then its close.
    seen = await slow_drain
    assert slow.close_code == 4008
    assert 0 < seen < n
    assert len(hub.connections) == 0  # nothing of the slow client is kept


async def _read_after(ws, ready) -> int:
    await wait_until(ready, timeout_s=30, interval_s=0.01)
    seen = 0
    try:
        async with asyncio.timeout(30):
            async for raw in ws:
                seen += raw.count('"seq":')
    except ConnectionClosed:
        return seen
    return seen


async def test_redis_load_does_not_grow_with_the_number_of_clients_watching_a_run(gateway, publisher, redis):
    """Counted, not timed: the gateway's reads per publisher write stay at about one whether 1 or
    200 clients watch (a per-client reader would make it 200)."""

    async def measure(clients: int) -> tuple[int, int]:
        run_id = new_run_id()
        await publish_run(publisher, run_id, 4, finish=False)
        sockets = [
            await connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers, max_size=None)
            for _ in range(clients)
        ]
        last_seqs = [0] * clients
        live = [asyncio.Event() for _ in sockets]
        drains = [asyncio.create_task(_drain(ws, live[i], last_seqs, i)) for i, ws in enumerate(sockets)]
        async with asyncio.timeout(60):  # joins done
            for joined in live:
                await joined.wait()
        await redis.config_resetstat()
        for _ in range(200):
            for _ in range(10):
                publisher.emit(run_id, beat())
            await asyncio.sleep(0.01)
        await publisher.flush(5)
        total = await redis.xlen(keys.run_events(run_id))
        await wait_until(lambda: min(last_seqs) >= total, timeout_s=60)  # every client has every event
        calls = await _command_calls(redis)
        for ws in sockets:
            await ws.close()
        for task in drains:
            task.cancel()
        writes = calls.get("evalsha", 0) + calls.get("eval", 0)
        reads = sum(calls.get(c, 0) for c in GATEWAY_READS)
        return writes, reads

    for clients in (1, 200):
        writes, reads = await measure(clients)
        assert writes > 0
        # One XREAD per wake-up (each write wakes it at most once), plus the index's and stall
        # monitor's few periodic reads: independent of the client count.
        assert reads <= writes + 30, (clients, writes, reads)


async def _drain(ws, live: asyncio.Event, last_seqs: list[int], i: int) -> None:
    """Read everything; set `live` at the `live` frame and keep the last seq seen in last_seqs[i]."""
    try:
        async for message in ws:
            frame = orjson.loads(message)
            if frame["type"] == "live":
                live.set()
            elif frame["type"] == "events" and frame["events"]:
                last_seqs[i] = frame["events"][-1]["seq"]
    except ConnectionClosed:
        return


async def test_clients_resume_with_contiguous_seq_across_a_gateway_restart(gateway, publisher):
    run_id, n = new_run_id(), 6_000
    producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=50, tick_s=0.01))
    watchers = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(5)]
    followers = [asyncio.create_task(w.follow(n, timeout_s=60)) for w in watchers]
    await wait_until(lambda: all(w.seqs for w in watchers), timeout_s=30)  # all following
    await asyncio.to_thread(gateway.stop)
    await asyncio.sleep(0.3)  # down for a moment: the clients' first reconnects fail
    await asyncio.to_thread(gateway.start)
    await asyncio.gather(producer, *followers)
    for w in watchers:
        assert w.seqs == list(range(1, n + 1))
        assert w.connects >= 2  # each was cut off by the restart and resumed with `since`


@pytest.mark.cluster
async def test_two_gateways_serve_the_same_run_identically(start_gateway, publisher, redis):
    first, second = start_gateway(), start_gateway()
    run_id, n = new_run_id(), 5_000
    producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=100))
    # Join once the run exists (a socket for a run not yet queued is closed 4404), mid-stream.
    await wait_for_event(redis, run_id, "run.queued", 10)
    watchers = [RunWatcher(g.ws, run_id, headers=g.headers) for g in (first, second) for _ in range(5)]
    await asyncio.gather(producer, *(w.session(until_seq=n) for w in watchers))
    reference = watchers[0].ids
    assert len(reference) == n
    for w in watchers:
        assert w.seqs == list(range(1, n + 1)) and w.ids == reference, w.close_code


async def test_one_gateway_serves_a_thousand_active_runs_at_once(gateway, publisher, redis):
    runs = [new_run_id() for _ in range(1_000)]
    plan = RunQueued(name="many", planned_calls=1, phases=[PhasePlan(name="p", calls=1)], timeout_s=60)
    started = RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0, heartbeat_s=3600)
    for run_id in runs:
        publisher.emit(run_id, plan)
        publisher.emit(run_id, started)
    await publisher.flush(10)
    sockets = []
    for run_id in runs:
        # No keepalive pings: on a busy machine 1,000 sockets cannot all be answered within 20 s.
        url = f"{gateway.ws}/ws/runs/{run_id}"
        sockets.append(await connect(url, additional_headers=gateway.headers, max_size=None, ping_interval=None))
    for ws in sockets:  # each has its history (run.queued, run.started) and is live
        while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "live":
            pass
    hub = gateway.app_state["hub"]
    assert hub.channel_count == 1_000
    reads_before = hub.stats.reads
    for run_id in runs:
        publisher.emit(run_id, beat())
    for ws, run_id in zip(sockets, runs, strict=True):
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        while frame["type"] != "events":
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert [(e["run_id"], e["seq"]) for e in frame["events"]] == [(run_id, 3)]
    # 1,000 streams, one XREAD each time: far fewer reads than runs.
    assert hub.stats.reads - reads_before < 100
    for ws in sockets:
        await ws.close()
