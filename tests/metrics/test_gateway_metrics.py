"""A gateway's /metrics: clients, frames, events, replays, resets and lags, as its clients saw them."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from helpers import wait_until
from livestats_shared import keys
from livestats_shared.events import CallStarted
from livestats_shared.ids import new_run_id
from scrape_util import scrape, scrape_text, total
from websockets.asyncio.client import connect
from ws_client import publish_run


async def test_gateway_counts_what_its_clients_received(gateway, publisher, promtool):
    url = f"{gateway.http}/metrics"
    # /metrics needs no token (aggregates only) while the API does
    async with httpx.AsyncClient(base_url=gateway.http, timeout=5) as anonymous:
        assert (await anonymous.get("/api/runs")).status_code == 401
    assert scrape(url) and total(scrape(url), "livestats_gateway_clients") == 0
    run_id = new_run_id()
    # history: queued, started, 3 x (call started, succeeded), 2 heartbeats; still running: it takes the live event
    await publish_run(publisher, run_id, 10, finish=False)

    received: list[dict] = []
    event_frames: list[bytes] = []
    async with (
        connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws,
        gateway.client() as http,
        http.stream("GET", f"/api/runs/{run_id}/stream") as sse,
    ):
        await wait_until(lambda: total(scrape(url), "livestats_gateway_clients", transport="sse") == 1)
        m = scrape(url)
        assert total(m, "livestats_gateway_clients", transport="ws") == 1

        async def read_ws_until(n: int) -> None:
            while len(received) < n:
                raw = await ws.recv()
                frame = orjson.loads(raw)
                if frame["type"] == "events":
                    event_frames.append(raw.encode())
                    received.extend(frame["events"])

        async with asyncio.timeout(10):
            await read_ws_until(10)
        publisher.emit(run_id, CallStarted(phase="generate", call=99, attempt=1))
        async with asyncio.timeout(10):
            await read_ws_until(11)
        await sse.aclose()

    await wait_until(lambda: total(scrape(url), "livestats_gateway_clients") == 0)
    m = scrape(url)
    assert total(m, "livestats_gateway_replay_events_count") == 2  # one replay per client
    assert total(m, "livestats_gateway_events_sent_total", mode="replay") == 2 * 10
    # the live event reached both clients' queues (the SSE one may have left before its sender took it)
    assert total(m, "livestats_gateway_events_sent_total", mode="live") == 2
    # the replay was one frame of 10 events: its bytes less the wrapper and the 9 commas, per client
    replay_json = len(event_frames[0]) - len(b'{"type":"events","events":[]}') - 9
    assert total(m, "livestats_gateway_replay_bytes_total") == 2 * replay_json
    assert total(m, "livestats_gateway_delivery_lag_seconds_count") >= 1
    assert total(m, "livestats_gateway_events_read_total") >= 1
    # hello, events, live, then the live batch: at least 4 frames taken by the WebSocket's sender
    assert total(m, "livestats_gateway_frames_sent_total", transport="ws") >= 4
    assert total(m, "livestats_gateway_frames_sent_total", transport="sse") >= 3
    assert total(m, "livestats_gateway_resets_sent_total") == 0

    lint = promtool("check", "metrics", stdin=scrape_text(url))
    assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_resets_sent_on_resume_are_counted_by_reason(gateway, publisher, redis):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    await redis.xtrim(keys.run_events(run_id), maxlen=2, approximate=False)  # seq 3 and 4 are left
    first_id = (await redis.xrange(keys.run_events(run_id), count=1))[0][0].decode()
    # 1-1 lies before the retained history, which no longer starts at seq 1; <first ms>-99999 lies
    # after its first entry but is no entry.
    for since in ("1-1", first_id.split("-")[0] + "-99999"):
        async with connect(f"{gateway.ws}/ws/runs/{run_id}?since={since}", additional_headers=gateway.headers) as ws:
            while orjson.loads(await ws.recv())["type"] != "live":
                pass
    m = scrape(f"{gateway.http}/metrics")
    assert total(m, "livestats_gateway_resets_sent_total", reason="trimmed") == 1
    assert total(m, "livestats_gateway_resets_sent_total", reason="unknown_since") == 1
    assert total(m, "livestats_gateway_resets_sent_total", reason="gap") == 0
