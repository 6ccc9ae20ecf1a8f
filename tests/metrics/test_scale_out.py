"""Two workers and two gateways against one set of runs: summed over processes, every count is
exactly what happened (each process counts only what it did)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest
from helpers import wait_finished, wait_until
from livestats_shared.control import submit_run
from livestats_shared.events import PhasePlan, RunQueued, RunStarted
from livestats_shared.history import read_events
from livestats_shared.ids import new_run_id
from livestats_shared.publish import NO_RUN
from livestats_shared.spec import PhaseSpec, RunSpec
from scrape_util import scrape, total
from websockets.asyncio.client import connect

pytestmark = pytest.mark.slow  # two worker processes and two gateways

FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "0"}


async def _watch(gateway, run_id: str) -> int:
    """Follow a run from its start to run.finished; how many events arrived."""
    seen = 0
    async with asyncio.timeout(60), connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
        async for raw in ws:
            frame = orjson.loads(raw)
            for event in frame.get("events", []):
                seen += 1
                if event["type"] == "run.finished":
                    return seen
    raise AssertionError(f"{run_id}: connection closed before run.finished")


async def _silent_run(publisher) -> str:
    """A run whose worker vanished right after starting it: a gateway must mark it stalled."""
    run_id = new_run_id()
    started_ms = int(time.time() * 1000) - 5_000
    queued = RunQueued(name="ghost", planned_calls=1, phases=[PhasePlan(name="generate", calls=1)], timeout_s=600)
    await publisher.publish(run_id, queued, guard=(NO_RUN,), ts=started_ms - 10)
    started = RunStarted(
        worker="ghost:1", timeout_s=600, deadline_ts=started_ms + 600_000, retry_budget=0, heartbeat_s=0.5
    )
    await publisher.publish(run_id, started, guard=("queued",), ts=started_ms)
    return run_id


async def test_sums_over_two_workers_and_two_gateways_are_exact(
    redis, publisher, start_gateway, metrics_worker, queue_name
):
    # The ghost has been silent for 5 s; live runs get 2 heartbeats + 3 s before a mark, which a
    # busy machine can need (a 0.2 s margin once marked a live run stalled).
    gateways = [start_gateway(stall_margin_s=3.0) for _ in range(2)]
    workers = {name: await metrics_worker(worker_name=name, max_runs=2) for name in ("w1", "w2")}
    spec = RunSpec(
        retry_budget_ratio=1,
        backoff_base_s=0,
        phases=[
            PhaseSpec(name="generate", calls=3, concurrency=3, env={**FAST, "FPF_SIM_FAIL_FIRST": "1"}),
            PhaseSpec(name="evaluate", calls=2, env=FAST),
        ],
    )
    run_ids = [await submit_run(redis, publisher, spec, queue_name=queue_name) for _ in range(6)]
    ghost = await _silent_run(publisher)
    watchers = [asyncio.create_task(_watch(g, r)) for r in [*run_ids, ghost] for g in gateways]
    received = await asyncio.gather(*watchers)
    for run_id in run_ids:
        assert (await wait_finished(redis, run_id)).payload().outcome.value == "succeeded"
    assert (await wait_finished(redis, ghost)).payload().outcome.value == "stalled"

    # What really happened, from the streams.
    by_worker: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    retries = 0
    for run_id in run_ids:
        events = await read_events(redis, run_id)
        (started,) = [e for e in events if e.type == "run.started"]
        worker = started.data["worker"]
        by_worker[worker] += 1
        calls[worker] += sum(e.type in ("call.succeeded", "call.failed") for e in events)
        retries += sum(e.type == "call.retrying" for e in events)
    assert sum(by_worker.values()) == 6 and retries == 6 * 3
    assert set(by_worker) == set(workers)  # both took runs (each runs at most 2 at once)

    worker_scrapes = {name: scrape(url) for name, url in workers.items()}
    for name, m in worker_scrapes.items():
        assert total(m, "livestats_runs_started_total") == by_worker[name]
        assert total(m, "livestats_runs_finished_total", outcome="succeeded") == by_worker[name]
        assert total(m, "livestats_calls_total") == calls[name]
    assert sum(total(m, "livestats_call_retries_total") for m in worker_scrapes.values()) == retries
    assert sum(total(m, "livestats_calls_total", outcome="failed") for m in worker_scrapes.values()) == retries

    # Each gateway counts what it sent: exactly what its own clients received.
    urls = [f"{g.http}/metrics" for g in gateways]
    await wait_until(lambda: all(total(scrape(u), "livestats_gateway_clients") == 0 for u in urls))
    gateway_scrapes = [scrape(u) for u in urls]
    for i, m in enumerate(gateway_scrapes):
        assert total(m, "livestats_gateway_events_sent_total") == sum(received[i :: len(gateways)])
        assert total(m, "livestats_gateway_replay_events_count") == len(run_ids) + 1
    # The stalled run is counted once, by the one gateway whose mark won.
    assert sum(total(m, "livestats_runs_stalled_total") for m in gateway_scrapes) == 1
    assert sum(total(m, "livestats_gateway_stall_leader") for m in gateway_scrapes) == 1
