"""Quotas through the API: refused submissions say which limit and when to retry; a spec over
the operator's limits names the field; a queued run says where it waits."""

from __future__ import annotations

import uuid

from helpers import wait_finished
from livestats_shared.quota import Quota

FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "10"}


def spec(calls: int = 1, concurrency: int = 1, name: str = "quota") -> dict:
    return {"name": name, "phases": [{"name": "generate", "calls": calls, "concurrency": concurrency, "env": FAST}]}


async def test_submissions_over_the_rate_answer_429_with_a_computed_retry_after(start_gateway, make_token):
    gw = start_gateway(quota=Quota(submissions_per_minute=3))
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with gw.client(alice) as client:
        for _ in range(3):
            assert (await client.post("/api/runs", json=spec())).status_code == 202
        refused = await client.post("/api/runs", json=spec())
    assert refused.status_code == 429, refused.text
    assert "3 submissions per minute" in refused.json()["detail"]
    # The first of the three leaves the 60 s window within a minute of now.
    assert 50 <= int(refused.headers["Retry-After"]) <= 60
    async with gw.client(bob) as client:  # a quota per principal
        assert (await client.post("/api/runs", json=spec())).status_code == 202


async def test_a_full_queue_answers_429_and_an_override_raises_one_principals_limit(start_gateway, make_token):
    gw = start_gateway(quota=Quota(queued_runs=2), quota_overrides={"bob": {"queued_runs": 5}})
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with gw.client(alice) as client:
        assert [(await client.post("/api/runs", json=spec())).status_code for _ in range(3)] == [202, 202, 429]
        refused = await client.post("/api/runs", json=spec())
    assert "2 queued runs" in refused.json()["detail"] and int(refused.headers["Retry-After"]) >= 1
    async with gw.client(bob) as client:
        assert [(await client.post("/api/runs", json=spec())).status_code for _ in range(5)] == [202] * 5


async def test_a_spec_over_the_operators_limits_answers_422_naming_the_field_and_the_limit(start_gateway, make_token):
    gw = start_gateway(quota=Quota(max_concurrency=8, max_calls=100))
    name = f"limits-{uuid.uuid4().hex[:8]}"
    async with gw.client(await make_token("alice", "submit")) as client:
        wide = await client.post("/api/runs", json=spec(calls=10, concurrency=9, name=name))
        big = await client.post("/api/runs", json=spec(calls=101, name=name))
        fits = await client.post("/api/runs", json=spec(calls=100, concurrency=8, name=name))
        runs = (await client.get("/api/runs")).json()["runs"]
    assert wide.status_code == 422 and big.status_code == 422
    [error] = wide.json()["detail"]
    assert error["loc"] == ["body", "phases", "0", "concurrency"] and "limit of 8" in error["msg"]
    assert "at most 100" in big.json()["detail"][0]["msg"]
    assert fits.status_code == 202
    assert [r["run_id"] for r in runs if r["name"] == name] == [
        fits.json()["run_id"]
    ]  # refused specs left nothing behind


async def test_a_queued_run_shows_its_place_and_why_it_waits(start_gateway, make_token):
    gw = start_gateway()
    async with gw.client(await make_token("alice", "submit")) as client:
        ids = [(await client.post("/api/runs", json=spec())).json()["run_id"] for _ in range(3)]
        views = [(await client.get(f"/api/runs/{rid}")).json() for rid in ids]
    assert [v["queue"]["position"] for v in views] == [1, 2, 3]
    assert views[0]["queue"]["reason"] == "waiting for a worker: none is running"
    assert views[0]["status"] == "queued" and views[0]["queue"]["state"] == "pending"


async def test_a_finished_run_has_no_queue(start_gateway, make_token, start_worker, redis):
    gw = start_gateway()
    await start_worker()
    async with gw.client(await make_token("alice", "submit")) as client:
        run_id = (await client.post("/api/runs", json=spec())).json()["run_id"]
        await wait_finished(redis, run_id, 60)
        view = (await client.get(f"/api/runs/{run_id}")).json()
    assert view["status"] == "succeeded" and view["queue"] is None
