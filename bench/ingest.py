"""Ingest, in a process of its own (one worker process): how many events per second go through
the publisher API into Redis, and what one `record`-style call (build the event, hand it over)
costs its caller.

    python -m bench.ingest '{"url": ..., "events": 50000, "design": "livestats" | "broadcaster"}'

livestats: `Publisher.emit` (fire-and-forget into the outbox; the drain task batches to Redis),
with the caller yielding to the loop every 100 events as a worker's code does between awaits.
broadcaster: `await Broadcast.publish` (one XADD per event, awaited: it has no other way).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import orjson
from broadcaster import Broadcast
from livestats_shared.events import CallStarted, PhasePlan, RunQueued, RunStarted
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect

from .feed import _envelope, below

YIELD_EVERY = 100
OUTBOX_HIGH = 50_000  # the caller pauses above this (emit would raise OutboxFull at capacity)


async def livestats(url: str, n: int) -> tuple[float, list[int]]:
    run = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    calls: list[int] = []
    async with Publisher(connect(url, "livestats.bench.ingest")) as pub:
        # The gate takes calls of a started run, for a declared phase, fenced by its owner epoch.
        plan = RunQueued(name="bench", planned_calls=n, phases=[PhasePlan(name="bench", calls=n)], timeout_s=3600)
        await pub.publish(run, plan)
        start = RunStarted(worker="bench", timeout_s=3600, deadline_ts=0, retry_budget=0, heartbeat_s=3600)
        epoch = (await pub.publish(run, start)).epoch
        t0 = time.perf_counter()
        for i in range(n):
            c0 = time.perf_counter_ns()
            pub.emit(run, CallStarted(phase="bench", call=i, attempt=1, pid=None), fence=epoch)
            calls.append(time.perf_counter_ns() - c0)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
                await below(pub, OUTBOX_HIGH)
        if not await pub.flush(120):
            raise RuntimeError("publisher did not flush")
        elapsed = time.perf_counter() - t0
        await pub.redis.aclose()
    return n / elapsed, calls


async def broadcaster(url: str, n: int) -> tuple[float, list[int]]:
    run = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    calls: list[int] = []
    async with Broadcast(url.replace("redis://", "redis-stream://", 1)) as bc:
        t0 = time.perf_counter()
        for i in range(n):
            c0 = time.perf_counter_ns()
            data = CallStarted(phase="bench", call=i, attempt=1, pid=None)
            await bc.publish(f"bench:ingest:{run}", _envelope(run, i + 1, time.time_ns(), data))
            calls.append(time.perf_counter_ns() - c0)
        elapsed = time.perf_counter() - t0
    return n / elapsed, calls


def main() -> None:
    config = orjson.loads(sys.argv[1])
    measure = livestats if config["design"] == "livestats" else broadcaster
    # Plain asyncio, as the worker runs (serve.py: asyncio.run).
    cpu0 = time.process_time()
    rate, calls = asyncio.run(measure(config["url"], config["events"]))
    cpu = time.process_time() - cpu0  # robust to a busy machine, unlike the rate
    calls.sort()
    result = {
        "events_per_s": rate,
        "cpu_us_per_event": cpu / config["events"] * 1e6,
        "call_p50_us": calls[len(calls) // 2] / 1e3,
        "call_p99_us": calls[int(len(calls) * 0.99)] / 1e3,
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
