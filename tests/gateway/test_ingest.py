"""External producers: `POST /api/runs` with `"external": true`, then batches of events posted
to `/api/runs/{id}/events` the way a shell orchestrator would with curl."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from livestats_gateway.routes.ingest import INGEST_MAX_BYTES
from livestats_shared import keys
from livestats_shared.history import read_events, read_snapshot
from livestats_shared.stats import fold

EXTERNAL = {
    "name": "orchestrator",
    "external": True,
    "phases": [{"name": "plan", "calls": 2}, {"name": "build", "calls": 1}],
}


PAST_TS = int(time.time() * 1000) - 60_000  # a minute ago: inside the skew window


def started(**overrides):
    data = {
        "worker": "orchestrator.sh",
        "timeout_s": 600,
        "deadline_ts": int(time.time() * 1000) + 600_000,
        "retry_budget": 0,
        "heartbeat_s": 3600,
    }
    return {"type": "run.started", "data": {**data, **overrides}}


@pytest.fixture
async def client(gateway):
    async with gateway.client() as http:  # as the gateway's admin
        yield http


async def open_external(client) -> str:
    answer = await client.post("/api/runs", json=EXTERNAL)
    assert answer.status_code == 202, answer.text
    return answer.json()["run_id"]


async def test_an_external_run_is_recorded_but_never_enqueued(client, redis, queue_name):
    run_id = await open_external(client)
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and (snap.status, snap.external, snap.planned_calls) == ("queued", True, 3)
    internal = await client.post("/api/runs", json={**EXTERNAL, "external": False})
    assert internal.status_code == 202
    assert await redis.zcard(queue_name) == 1, "only the worker run is enqueued for a worker"


async def test_a_valid_batch_is_published_in_order_and_folds_into_the_snapshot(client, redis):
    run_id = await open_external(client)
    batch = {"events": [
        started(),
        {"type": "phase.started", "data": {"phase": "plan", "index": 0, "calls": 2, "concurrency": 1}},
        {"type": "call.started", "data": {"phase": "plan", "call": 0, "attempt": 1, "predicted_tokens": 100}},
        {"type": "call.succeeded", "data": {"phase": "plan", "call": 0, "attempt": 1, "duration_s": 1.5, "bytes": 10,
                                            "usage": {"input_tokens": 40, "output_tokens": 70}}, "ts": PAST_TS},
    ]}  # fmt: skip
    answer = await client.post(f"/api/runs/{run_id}/events", content=json.dumps(batch),
                               headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], body["last_seq"]) == (4, 5)  # run.queued is seq 1

    events = await read_events(redis, run_id)
    assert [e.type for e in events] == ["run.queued", "run.started", "phase.started", "call.started", "call.succeeded"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5] and events[-1].id == body["last_id"]
    assert events[-1].ts == PAST_TS  # the producer's own timestamp is kept
    snap = await read_snapshot(redis, run_id)
    assert snap is not None
    assert (snap.status, snap.current_phase, snap.successful_calls, snap.total_tokens, snap.predicted_tokens) == (
        "running", "plan", 1, 110, 100)  # fmt: skip
    raw = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.run_stats(run_id))).items()}
    folded = fold(events)
    assert {k: raw[k] for k in folded} == folded


@pytest.mark.parametrize(
    ("events", "loc"),
    [
        ([started(), {"type": "phase.started", "data": {"phase": "plan", "index": "first", "calls": 2, "concurrency": 1}}],
         ["body", "events", 1, "data", "index"]),
        ([{"type": "phase.started", "data": {"phase": "plan", "index": 0, "calls": 2}}],
         ["body", "events", 0, "data", "concurrency"]),
        ([{"type": "phase.finished", "data": {"phase": "plan", "index": 0, "succeeded": 1, "given_up": 0,
                                              "duration_s": 1, "colour": "red"}}],
         ["body", "events", 0, "data", "colour"]),
        ([started(), {"type": "phase.teleported", "data": {}}], ["body", "events", 1, "type"]),
        ([{"type": "run.queued", "data": {"name": "x", "planned_calls": 0, "phases": [], "timeout_s": 1}}],
         ["body", "events", 0, "type"]),
        ([{"type": "run.finished", "data": {"outcome": "succeeded", "reason": "done"}}, started()],
         ["body", "events", 0, "type"]),
        ([started(ts=5)], ["body", "events", 0, "data", "ts"]),
    ],
)  # fmt: skip
async def test_an_invalid_event_refuses_the_whole_batch_naming_its_index_and_field(client, redis, events, loc):
    run_id = await open_external(client)
    answer = await client.post(f"/api/runs/{run_id}/events", json={"events": events})
    assert answer.status_code == 422, answer.text
    assert loc in [error["loc"] for error in answer.json()["detail"]]
    assert [e.type for e in await read_events(redis, run_id)] == ["run.queued"], "nothing of the batch is written"


async def test_an_oversized_batch_is_refused_with_413(client, gateway, redis):
    run_id = await open_external(client)
    too_many = {"events": [started()] * (gateway.config.ingest_max_events + 1)}
    answer = await client.post(f"/api/runs/{run_id}/events", json=too_many)
    assert answer.status_code == 413
    assert f"at most {gateway.config.ingest_max_events}" in answer.json()["detail"]

    heartbeat: dict[str, Any] = {
        "type": "heartbeat",
        "data": {"elapsed_s": 1, "remaining_s": 1, "in_flight": 0, "pids": []},
    }
    too_big = json.dumps(
        {"events": [{**heartbeat, "data": {**heartbeat["data"], "pids": [1] * (INGEST_MAX_BYTES // 2)}}]}
    )
    answer = await client.post(
        f"/api/runs/{run_id}/events", content=too_big, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert [e.type for e in await read_events(redis, run_id)] == ["run.queued"]


async def test_unknown_runs_are_404_and_worker_runs_or_finished_runs_are_409(client, redis):
    answer = await client.post("/api/runs/no-such-run/events", json={"events": [started()]})
    assert answer.status_code == 404

    internal = await client.post("/api/runs", json={**EXTERNAL, "external": False})
    answer = await client.post(f"/api/runs/{internal.json()['run_id']}/events", json={"events": [started()]})
    assert answer.status_code == 409 and "not external" in answer.json()["detail"]

    run_id = await open_external(client)
    finish = {"type": "run.finished", "data": {"outcome": "succeeded", "reason": "done"}}
    assert (await client.post(f"/api/runs/{run_id}/events", json={"events": [started(), finish]})).status_code == 200
    answer = await client.post(f"/api/runs/{run_id}/events", json={"events": [started()]})
    assert answer.status_code == 409 and "has finished (succeeded)" in answer.json()["detail"]
    assert (await read_snapshot(redis, run_id)).status == "succeeded"


async def test_a_producer_needs_a_valid_token_with_the_submit_scope_for_a_run_it_may_see(gateway, make_token, redis):
    alice = await make_token("alice", "submit")
    async with gateway.client(alice) as http:
        run_id = (await http.post("/api/runs", json=EXTERNAL)).json()["run_id"]
        assert (await http.post(f"/api/runs/{run_id}/events", json={"events": [started()]})).status_code == 200

    url = f"{gateway.http}/api/runs/{run_id}/events"
    batch = {"events": [started()]}
    async with httpx.AsyncClient(timeout=10) as anonymous:
        missing = await anonymous.post(url, json=batch)
        wrong = await anonymous.post(url, json=batch, headers={"Authorization": "Bearer lsk_0123456789ab_not-a-secret"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"

    reader = await make_token("alice", "read")
    async with gateway.client(reader) as http:
        assert (await http.post(f"/api/runs/{run_id}/events", json=batch)).status_code == 403
    bob = await make_token("bob", "submit")
    async with gateway.client(bob) as http:
        assert (await http.post(f"/api/runs/{run_id}/events", json=batch)).status_code == 404, "not bob's run"
    assert [e.type for e in await read_events(redis, run_id)] == ["run.queued", "run.started"]


async def test_a_finish_racing_a_batch_leaves_no_event_after_run_finished(client, redis):
    run_id = await open_external(client)
    assert (await client.post(f"/api/runs/{run_id}/events", json={"events": [started()]})).status_code == 200
    beat = {"type": "heartbeat", "data": {"elapsed_s": 1, "remaining_s": 1, "in_flight": 0, "pids": []}}
    finish = {"type": "run.finished", "data": {"outcome": "failed", "reason": "aborted"}}
    url = f"/api/runs/{run_id}/events"
    beats, finished = await asyncio.gather(
        client.post(url, json={"events": [beat] * 500}), client.post(url, json={"events": [finish]})
    )
    assert finished.status_code == 200, finished.text
    events = await read_events(redis, run_id)
    assert events[-1].type == "run.finished", "nothing is written after the run finished"
    written = sum(e.type == "heartbeat" for e in events)
    if beats.status_code == 200:  # the batch was written before the finish
        assert written == 500
    else:  # the finish came first: the batch is refused whole, and the answer says why
        assert beats.status_code == 409, beats.text
        assert written == 0 and "failed" in beats.json()["detail"]


async def stream_and_hashes(redis, run_id: str) -> tuple:
    return (
        await redis.xrange(keys.run_events(run_id)),
        await redis.hgetall(keys.run_stats(run_id)),
        await redis.hgetall(keys.run_lifecycle(run_id)),
    )


def call_event(kind: str, call: int = 0, attempt: int = 1, phase: str = "plan", **data):
    base = {"phase": phase, "call": call, "attempt": attempt}
    if kind == "call.succeeded":
        base |= {"duration_s": 0.1, "bytes": 3}
    if kind == "call.failed":
        base |= {"reason": "empty", "duration_s": 0.1, "final": False}
    return {"type": kind, "data": base | data}


FINISH = {"type": "run.finished", "data": {"outcome": "succeeded", "reason": "done"}}


@pytest.mark.parametrize(
    ("setup", "batch", "code", "expected"),
    [
        pytest.param([], [call_event("call.started")], 409, "needs a running run", id="call-before-run.started"),
        pytest.param([started()], [call_event("call.started", phase="ghost")], 409, "not declared", id="undeclared-phase"),
        pytest.param(
            [started(), call_event("call.started"), call_event("call.failed")],
            [call_event("call.started", attempt=1)],
            409,
            "attempts must increase",
            id="non-increasing-attempt",
        ),
        pytest.param([started()], [call_event("call.succeeded")], 409, "no attempt 1 in flight", id="negative-in_flight"),
        pytest.param([started()], [started()], 409, "needs a queued run", id="second-run.started"),
        pytest.param([started(), FINISH], [call_event("call.started")], 409, "has finished", id="event-after-run.finished"),
        pytest.param(
            [started()],
            [{"type": "heartbeat", "ts": int(time.time() * 1000) + 86_400_000,
              "data": {"elapsed_s": 1, "remaining_s": 1, "in_flight": 0, "pids": []}}],
            422,
            "from the gateway's clock",
            id="heartbeat-a-day-ahead",
        ),
    ],
)  # fmt: skip
async def test_out_of_order_input_is_refused_with_a_reason_and_changes_nothing(
    client, redis, setup, batch, code, expected
):
    run_id = await open_external(client)
    url = f"/api/runs/{run_id}/events"
    if setup:
        assert (await client.post(url, json={"events": setup})).status_code == 200
    before = await stream_and_hashes(redis, run_id)
    answer = await client.post(url, json={"events": batch})
    assert answer.status_code == code, answer.text
    assert expected in answer.text
    assert await stream_and_hashes(redis, run_id) == before, "stream and hashes unchanged"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"input_tokens": 18446744073709551615, "output_tokens": 1}', id="2^64-1"),
        pytest.param('{"input_tokens": 9223372036854775807, "output_tokens": 9223372036854775807}', id="2^63-1-twice"),
        pytest.param('{"input_tokens": -1, "output_tokens": 1}', id="negative"),
        pytest.param('{"input_tokens": NaN, "output_tokens": 1}', id="nan"),
        pytest.param('{"input_tokens": Infinity, "output_tokens": 1}', id="infinity"),
        pytest.param('{"input_tokens": 1e308, "output_tokens": 1}', id="1e308"),
    ],
)
async def test_absurd_numbers_are_422_naming_the_field_and_the_good_requests_around_them_are_kept(client, redis, raw):
    run_id = await open_external(client)
    url = f"/api/runs/{run_id}/events"
    headers = {"content-type": "application/json"}
    good = {"events": [started(), call_event("call.started"), call_event("call.succeeded", usage={"input_tokens": 5})]}
    assert (await client.post(url, json=good)).status_code == 200
    before = await stream_and_hashes(redis, run_id)
    bad = (
        '{"events": [' + json.dumps(call_event("call.started", call=1)) + ", "
        '{"type": "call.succeeded", "data": {"phase": "plan", "call": 1, "attempt": 1, "duration_s": 0.1, '
        '"bytes": 3, "usage": ' + raw + "}}]}"
    )
    answer = await client.post(url, content=bad, headers=headers)
    assert answer.status_code == 422, answer.text
    loc = answer.json()["detail"][0]["loc"]
    # NaN and Infinity are refused where the body is read (finite.py: loc is their offset).
    non_finite = "NaN" in raw or "Infinity" in raw
    assert loc[:5] == ["body", "events", 1, "data", "usage"] or (non_finite and loc[0] == "body"), loc
    assert await stream_and_hashes(redis, run_id) == before, "nothing of the bad request is written"
    # A later good request goes through, and the snapshot is the fold of the stream.
    nxt = {"events": [call_event("call.started", call=1), call_event("call.succeeded", call=1)]}
    assert (await client.post(url, json=nxt)).status_code == 200
    events = await read_events(redis, run_id)
    raw_hash = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.run_stats(run_id))).items()}
    assert {k: v for k, v in raw_hash.items() if not k.startswith("producer:")} == fold(events)
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and (snap.successful_calls, snap.input_tokens) == (2, 5)


@pytest.mark.parametrize(
    ("event", "loc"),
    [
        pytest.param({"elapsed_s": float("nan")}, "elapsed_s", id="nan-elapsed"),
        pytest.param({"elapsed_s": float("inf")}, "elapsed_s", id="infinite-elapsed"),
        pytest.param({"in_flight": -1}, "in_flight", id="negative-in_flight"),
        pytest.param({"in_flight": 2**53}, "in_flight", id="in_flight-over-2^53"),
    ],
)
async def test_absurd_heartbeat_figures_are_422_never_5xx(client, redis, event, loc):
    run_id = await open_external(client)
    url = f"/api/runs/{run_id}/events"
    assert (await client.post(url, json={"events": [started()]})).status_code == 200
    data = {"elapsed_s": 1, "remaining_s": 1, "in_flight": 0, "pids": []} | event
    body = json.dumps({"events": [{"type": "heartbeat", "data": data}]})  # NaN/Infinity as json.dumps writes them
    answer = await client.post(url, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    where = answer.json()["detail"][0]["loc"]
    # NaN and Infinity are refused where the body is read (finite.py: loc is their offset).
    non_finite = "NaN" in body or "Infinity" in body
    assert where == ["body", "events", 0, "data", loc] or (non_finite and where[0] == "body"), where


async def test_a_ts_of_1e23_is_422(client, redis):
    run_id = await open_external(client)
    body = '{"events": [{"type": "run.started", "ts": 1e23, "data": ' + json.dumps(started()["data"]) + "}]}"
    answer = await client.post(f"/api/runs/{run_id}/events", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:4] == ["body", "events", 0, "ts"]
