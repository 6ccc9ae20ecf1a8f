"""Label cardinality: every run has its own phase and model names, yet after 100 runs the
gateway and the worker expose exactly as many series as after the first 10."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from helpers import wait_finished
from livestats_shared.control import submit_run
from livestats_shared.spec import PhaseSpec, RunSpec
from scrape_util import scrape
from websockets.asyncio.client import connect


async def _run_and_watch(redis, publisher, gateway, queue_name: str, i: int) -> None:
    # A name and a model never seen before: a label made from either would add series.
    spec = RunSpec(phases=[PhaseSpec(name=f"phase-{i}", calls=1, output="text", env={"FPF_MODEL": f"model-{i}"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    async with asyncio.timeout(30), connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
        async for raw in ws:
            if any(e["type"] == "run.finished" for e in orjson.loads(raw).get("events", [])):
                break
    assert (await wait_finished(redis, run_id)).payload().outcome.value == "succeeded"


@pytest.mark.slow  # many runs through a worker
async def test_series_do_not_grow_with_runs(redis, publisher, gateway, metrics_worker, queue_name):
    # `echo` answers at once: 100 runs take seconds, and it is the labels that are under test.
    worker_url = await metrics_worker(fpf_command=["echo", "answer"], max_runs=10)
    gateway_url = f"{gateway.http}/metrics"
    series: list[tuple[int, int]] = []
    for batch in range(10):
        await asyncio.gather(
            *(_run_and_watch(redis, publisher, gateway, queue_name, batch * 10 + i) for i in range(10))
        )
        series.append((len(scrape(worker_url)), len(scrape(gateway_url))))
    worker_after_100 = scrape(worker_url)
    assert sum(v for (name, _), v in worker_after_100.items() if name == "livestats_runs_finished_total") == 100
    assert series[-1] == series[0], f"series per batch of 10 runs (worker, gateway): {series}"
    labels = {dict(ls).get(k) for (_, ls) in worker_after_100 for k in ("phase", "model")} - {None}
    assert labels == {"other"}
