"""`GET /api/runs/{id}/stream`: the same feed as Server-Sent Events, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from helpers import wait_for_event
from livestats_shared.ids import new_run_id
from sentinel_fixtures import on_each_server
from ws_client import publish_run


async def _read_sse(
    client: httpx.AsyncClient, url: str, *, until_seq: int, stop_after: int | None = None, headers=None
):
    """Parse the stream; return (events, control messages) once `until_seq` or `stop_after` events arrived."""
    events: list[dict] = []
    controls: list[dict] = []
    message: dict = {}
    async with client.stream("GET", url, headers=headers or {}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line:
                field, _, value = line.partition(": ")
                message[field] = value
                continue
            if "data" in message:
                body = orjson.loads(message["data"])
                if "seq" in body:
                    assert message["id"] == body["id"] and message["event"] == body["type"]
                    events.append(body)
                    if body["seq"] >= until_seq or (stop_after is not None and len(events) >= stop_after):
                        return events, controls
                else:
                    controls.append(body)
            message = {}
    return events, controls


@pytest.mark.cluster
@on_each_server
async def test_sse_streams_history_then_live_and_resumes_with_last_event_id(gateway, publisher, redis):
    run_id, n = new_run_id(), 3_000
    producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=50))
    await wait_for_event(redis, run_id, "run.queued", 30)  # the run exists before the client asks
    url = f"{gateway.http}/api/runs/{run_id}/stream"
    async with httpx.AsyncClient(headers=gateway.headers) as client:
        first, controls = await _read_sse(client, url, until_seq=n, stop_after=700)
        assert controls[0]["type"] == "hello"
        resumed, controls = await _read_sse(client, url, until_seq=n, headers={"Last-Event-ID": first[-1]["id"]})
        assert controls[0]["since"] == first[-1]["id"]
    await producer
    assert [e["seq"] for e in first + resumed] == list(range(1, n + 1))


async def test_sse_refuses_unknown_runs_invalid_ids_and_bad_resume_points(gateway, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    async with gateway.client() as client:
        assert (await client.get(f"/api/runs/{new_run_id()}/stream")).status_code == 404
        assert (await client.get("/api/runs/a:b/stream")).status_code == 422
        bad = await client.get(f"/api/runs/{run_id}/stream", headers={"Last-Event-ID": "not-an-id"})
        assert bad.status_code == 422 and "last-event-id" in bad.text.lower()
