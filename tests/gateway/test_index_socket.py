"""`/ws/runs`: the run index, live: new runs appear and status changes arrive without reload."""

from __future__ import annotations

import asyncio

import orjson
from livestats_shared.events import CallStarted, CallSucceeded, Outcome, PhasePlan, RunFinished, RunQueued, RunStarted
from livestats_shared.ids import new_run_id
from websockets.asyncio.client import connect


async def _next(ws, kind: str) -> dict:
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        if frame["type"] == kind:
            return frame


async def _summary(ws, run_id: str, **expected) -> dict:
    """Read `runs` updates until one shows `run_id` with the expected fields."""
    while True:
        for run in (await _next(ws, "runs"))["runs"]:
            if run["run_id"] == run_id and all(run.get(k) == v for k, v in expected.items()):
                return run


async def test_the_index_lists_existing_runs_then_shows_new_runs_and_status_changes_live(start_gateway, publisher):
    gateway = start_gateway(index_refresh_s=0.2)
    old = new_run_id()
    plan = {"name": "indexed", "planned_calls": 2, "phases": [PhasePlan(name="p", calls=2)], "timeout_s": 60}
    await publisher.publish(old, RunQueued(**plan))
    async with connect(f"{gateway.ws}/ws/runs", additional_headers=gateway.headers) as ws:
        index = await _next(ws, "index")
        assert old in [r["run_id"] for r in index["runs"]]
        await _next(ws, "live")

        new = new_run_id()
        await publisher.publish(new, RunQueued(**plan))
        assert (await _summary(ws, new, status="queued"))["planned_calls"] == 2
        await publisher.publish(new, RunStarted(worker="w1", timeout_s=60, deadline_ts=0, retry_budget=3))
        await _summary(ws, new, status="running")
        publisher.emit(new, CallStarted(phase="p", call=0, attempt=1))  # progress: not in the feed
        assert (await _summary(ws, new, in_flight=1))["attempts_started"] == 1
        # The contract refuses a run.finished with a call in flight: end it first.
        publisher.emit(new, CallSucceeded(phase="p", call=0, attempt=1, duration_s=0.1, bytes=1))
        await publisher.publish(new, RunFinished(outcome=Outcome.SUCCEEDED, reason="completed"))
        await _summary(ws, new, status="succeeded")
