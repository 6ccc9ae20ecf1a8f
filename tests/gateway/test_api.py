"""The REST API against a real gateway (uvicorn on a free port), a real server and real clients."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from helpers import wait_finished
from livestats_shared import keys
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.events import Heartbeat, Outcome, RunFinished, RunStarted
from livestats_shared.ids import new_run_id
from livestats_shared.spec import MAX_SPEC_BYTES, PhaseSpec, RunSpec

FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "10"}
INVALID_IDS = ["*", "a:b", "..", "x" * 300, "r\u00e9sum\u00e9", "UPPER", "-lead"]


@pytest.fixture
async def client(gateway):
    async with gateway.client() as http:
        yield http


def quick_spec(name: str = "api-test", calls: int = 1) -> RunSpec:
    return RunSpec(name=name, phases=[PhaseSpec(name="generate", calls=calls, env=FAST)])


async def test_submitted_run_is_accepted_with_its_links_and_finishes_with_correct_counts(client, redis, start_worker):
    spec = {
        "name": "through-the-api",
        "phases": [
            {"name": "generate", "calls": 4, "concurrency": 2, "env": FAST},
            {"name": "evaluate", "calls": 2, "env": FAST},
        ],
    }
    answer = await client.post("/api/runs", json=spec)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    run_id = body["run_id"]
    assert body["status"] == "queued"
    assert body["links"] == {
        "self": f"/api/runs/{run_id}",
        "events": f"/api/runs/{run_id}/events",
        "stream": f"/api/runs/{run_id}/stream",
        "ws": f"/ws/runs/{run_id}",
        "cancel": f"/api/runs/{run_id}/cancel",
    }
    assert answer.headers["location"] == f"/api/runs/{run_id}"
    queued = (await client.get(f"/api/runs/{run_id}")).json()
    assert (queued["status"], queued["planned_calls"]) == ("queued", 6)

    await start_worker()
    await wait_finished(redis, run_id, 30)
    snap = (await client.get(f"/api/runs/{run_id}")).json()
    assert (snap["status"], snap["outcome"]) == ("succeeded", "succeeded")
    assert (snap["planned_calls"], snap["calls_done"], snap["successful_calls"], snap["calls_given_up"]) == (6, 6, 6, 0)
    assert snap["in_flight"] == 0
    assert [(p["name"], p["planned"], p["done"]) for p in snap["phases"]] == [("generate", 4, 4), ("evaluate", 2, 2)]


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"phases": [{"name": "generate", "calls": 0}]}, ["body", "phases", 0, "calls"]),
        ({"phases": [{"name": "generate", "calls": 1, "env": {"PATH": "/tmp"}}]}, ["body", "phases", 0, "env", "PATH"]),
        ({"phases": [{"name": "generate", "calls": 1}], "surprise": 1}, ["body", "surprise"]),
        ({"name": "no phases"}, ["body", "phases"]),
    ],
)
async def test_an_invalid_spec_is_refused_with_422_naming_the_field(client, redis, spec, loc):
    before = await redis.zcard(keys.RUNS_INDEX)
    answer = await client.post("/api/runs", json=spec)
    assert answer.status_code == 422, answer.text
    assert loc in [error["loc"] for error in answer.json()["detail"]]
    assert await redis.zcard(keys.RUNS_INDEX) == before, "nothing may be recorded for an invalid spec"


async def test_a_body_over_one_mebibyte_is_refused_with_413_declared_or_chunked(client):
    too_big = b'{"name": "' + b"x" * MAX_SPEC_BYTES + b'"}'
    declared = await client.post("/api/runs", content=too_big, headers={"content-type": "application/json"})
    assert declared.status_code == 413

    async def chunks():
        for start in range(0, len(too_big), 64 << 10):
            yield too_big[start : start + (64 << 10)]

    chunked = await client.post("/api/runs", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert (await client.get("/healthz")).status_code == 200


async def test_runs_are_listed_newest_first_in_cursor_pages_filtered_by_status(client, redis, publisher, queue_name):
    ids = [await submit_run(redis, publisher, quick_spec(f"list-{i}"), queue_name=queue_name) for i in range(5)]
    for run_id in ids[1::2]:
        assert await cancel_run(redis, publisher, run_id) == "cancelled"
    # Three runs created in the same millisecond, with an index entry whose run has expired and
    # one that is not a run id: page boundaries fall between entries of equal score.
    mid = await redis.zscore(keys.RUNS_INDEX, ids[2])
    await redis.zadd(keys.RUNS_INDEX, {ids[1]: mid, ids[3]: mid}, xx=True)
    ghost, garbage = f"ghost-{new_run_id()}", b"not a run id!"
    await redis.zadd(keys.RUNS_INDEX, {ghost: mid, garbage: mid})
    try:
        scores = {run_id: await redis.zscore(keys.RUNS_INDEX, run_id) for run_id in ids}
        # Newest first; equal scores in the sorted set's own order (by member).
        expected = sorted(ids, key=lambda run_id: (scores[run_id], run_id), reverse=True)
        for limit in (1, 2):
            assert await collect(client, expected, limit=limit) == expected
        cancelled = [run_id for run_id in expected if run_id in ids[1::2]]
        assert await collect(client, cancelled, limit=1, status="cancelled") == cancelled
        assert await collect(client, expected, limit=3, status=["queued", "cancelled"]) == expected
    finally:
        await redis.zrem(keys.RUNS_INDEX, ghost, garbage)


async def collect(client, wanted, *, limit, status=None):
    """Page from the newest run until every run in `wanted` was seen; return those, in order."""
    seen, cursor = [], None
    statuses = [status] if isinstance(status, str) else status
    for _ in range(100):
        params = {
            "limit": limit,
            **({"status": statuses} if statuses else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        answer = await client.get("/api/runs", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["runs"]) <= limit
        if statuses:
            assert {r["status"] for r in page["runs"]} <= set(statuses)
        seen += [r["run_id"] for r in page["runs"]]
        assert len(seen) == len(set(seen)), "a run appeared on two pages"
        if set(wanted) <= set(seen) or page["next"] is None:
            break
        cursor = page["next"]
    return [r for r in seen if r in wanted]


async def test_a_runs_cursor_that_this_api_did_not_make_is_refused_with_422(client):
    for cursor in ["%%%", "bm90LWEtY3Vyc29y"]:
        answer = await client.get("/api/runs", params={"cursor": cursor})
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_event_pages_return_every_event_once_with_contiguous_seq(client, redis, publisher, queue_name):
    run_id = await submit_run(redis, publisher, quick_spec("events"), queue_name=queue_name)
    await publisher.publish(
        run_id, RunStarted(worker="w", timeout_s=600, deadline_ts=0, retry_budget=0, heartbeat_s=3600)
    )
    for i in range(39):
        publisher.emit(run_id, Heartbeat(elapsed_s=i, remaining_s=600 - i, in_flight=0, pids=[]))
    assert await publisher.flush(5)

    events, after, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"after": after} if after else {})}
        page = (await client.get(f"/api/runs/{run_id}/events", params=params)).json()
        pages += 1
        assert len(page["events"]) <= 7 and page["skipped"] == 0
        events += page["events"]
        if page["next"] is None:
            break
        assert page["next"] == page["events"][-1]["id"]
        after = page["next"]
    assert pages == 6  # 41 events: five full pages of 7, then 6
    assert [e["seq"] for e in events] == list(range(1, 42))
    assert len({e["id"] for e in events}) == 41
    assert events[0]["type"] == "run.queued" and {e["run_id"] for e in events} == {run_id}

    rest = await client.get(f"/api/runs/{run_id}/events", params={"after": events[-2]["id"]})
    assert [e["seq"] for e in rest.json()["events"]] == [41]


async def test_malformed_stream_entries_are_skipped_and_counted_not_a_500(client, redis, publisher, queue_name):
    run_id = await submit_run(redis, publisher, quick_spec("malformed"), queue_name=queue_name)
    stream = keys.run_events(run_id)
    await redis.xadd(stream, {"hello": "world"})
    await redis.xadd(stream, {"v": 1, "type": "call.started", "run_id": run_id, "seq": 2, "ts": 1, "data": "{}"})
    await publisher.publish(run_id, RunFinished(outcome=Outcome.FAILED, reason="test"))

    whole = (await client.get(f"/api/runs/{run_id}/events")).json()
    assert [e["type"] for e in whole["events"]] == ["run.queued", "run.finished"]
    assert (whole["skipped"], whole["next"]) == (2, None)

    # One entry per page: the pages that hold only a malformed entry still move on.
    after, counted, seen = None, 0, []
    for _ in range(10):
        params = {"limit": 1, **({"after": after} if after else {})}
        page = (await client.get(f"/api/runs/{run_id}/events", params=params)).json()
        counted += page["skipped"]
        seen += [e["type"] for e in page["events"]]
        if (after := page["next"]) is None:
            break
    assert (seen, counted) == (["run.queued", "run.finished"], 2)


@pytest.mark.parametrize("after", ["abc", "1-", "-1", "1-2-3", str(1 << 64), f"1-{1 << 64}", "\u0663"])
async def test_an_after_that_is_not_a_stream_id_is_refused_with_422(client, redis, publisher, queue_name, after):
    run_id = await submit_run(redis, publisher, quick_spec("bad-after"), queue_name=queue_name)
    answer = await client.get(f"/api/runs/{run_id}/events", params={"after": after})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", "after"]


async def test_nothing_follows_the_largest_stream_id(client, redis, publisher, queue_name):
    run_id = await submit_run(redis, publisher, quick_spec("max-id"), queue_name=queue_name)
    top = f"{(1 << 64) - 1}-{(1 << 64) - 1}"
    answer = await client.get(f"/api/runs/{run_id}/events", params={"after": top})
    page = answer.json()
    assert answer.status_code == 200
    assert (page["events"], page["next"], page["skipped"], page["after"], page["gap"]) == ([], None, 0, top, False)


def per_run_requests(run_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/runs/{run_id}"),
        ("GET", f"/api/runs/{run_id}/events"),
        ("POST", f"/api/runs/{run_id}/cancel"),
    ]


async def test_invalid_run_ids_are_refused_with_422_on_every_route(client):
    openapi = (await client.get("/openapi.json")).json()
    [param] = openapi["paths"]["/api/runs/{run_id}"]["get"]["parameters"]
    documented = re.compile(param["schema"]["pattern"])
    assert documented.match(new_run_id())
    for bad in INVALID_IDS:
        assert not documented.match(bad), f"the OpenAPI pattern must refuse {bad!r} too"
        for method, path in per_run_requests(quoted(bad)):
            answer = await client.request(method, path)
            assert answer.status_code == 422, (bad, path, answer.text)
            [error] = answer.json()["detail"]
            assert error["loc"] == ["path", "run_id"] and "invalid run id" in error["msg"]


def quoted(run_id: str) -> str:
    """Percent-encoded, so that '..' reaches the server as a segment instead of being resolved away."""
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"%{b:02X}" for b in c.encode()) for c in run_id)


async def test_an_unknown_run_is_404_on_every_route(client):
    run_id = f"unknown-{new_run_id()}"
    for method, path in per_run_requests(run_id):
        answer = await client.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json() == {"detail": f"no run {run_id}"}


async def test_cancelling_a_queued_run_cancels_it(client, redis, publisher, queue_name):
    run_id = await submit_run(redis, publisher, quick_spec("to-cancel"), queue_name=queue_name)
    answer = await client.post(f"/api/runs/{run_id}/cancel")
    assert answer.status_code == 202
    assert answer.json() == {"run_id": run_id, "status": "cancelled"}
    snap = (await client.get(f"/api/runs/{run_id}")).json()
    assert (snap["status"], snap["reason"]) == ("cancelled", "cancel_requested")


async def test_cancelling_a_finished_run_answers_the_status_it_had(client, redis, publisher, queue_name):
    run_id = await submit_run(redis, publisher, quick_spec("finished"), queue_name=queue_name)
    await publisher.publish(run_id, RunFinished(outcome=Outcome.TIMED_OUT, reason="deadline"))
    answer = await client.post(f"/api/runs/{run_id}/cancel")
    assert (answer.status_code, answer.json()) == (202, {"run_id": run_id, "status": "timed_out"})
    assert await redis.exists(keys.run_cancel(run_id)) == 0


@pytest.fixture
def hub_alive(gateway, monkeypatch):
    """Decide what the hub reports to /readyz, so these tests check the route, not the hub."""

    def set_alive(alive: bool) -> None:
        monkeypatch.setattr(gateway.app_state["hub"], "alive", lambda: alive)

    set_alive(True)
    return set_alive


async def test_health_needs_nothing_and_ready_needs_redis_and_the_stream_reader(client, hub_alive):
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "reason": None})
    hub_alive(False)
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.headers["retry-after"].isdigit()
    assert not_ready.json() == {"status": "unavailable", "reason": "stream reader is not running"}


async def wait_ready(client, timeout_s: float = 10) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while (answer := await client.get("/readyz")).status_code != 200:
        assert answer.status_code == 503 and answer.headers["retry-after"].isdigit(), answer.text
        assert time.monotonic() < deadline, f"not ready within {timeout_s}s: {answer.json()}"
        await asyncio.sleep(0.05)
    return answer


async def test_with_redis_stopped_the_api_answers_503_and_recovers_after_restart(
    client, redis, publisher, queue_name, redis_server, hub_alive
):
    server = redis_server.require_control()
    run_id = await submit_run(redis, publisher, quick_spec("outage"), queue_name=queue_name)
    server.stop()
    try:
        # An outage is reported, not waited out: a hang would run into this generous bound.
        async with asyncio.timeout(60):
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
            assert "Redis unavailable" in ready.json()["reason"]
            for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/events", "/api/runs"):
                answer = await client.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.headers["retry-after"].isdigit()
                assert "Redis unavailable" in answer.json()["detail"]
        # Run ids are checked before any Redis command: still 422, not 503.
        for method, path in per_run_requests(quoted("a:b")):
            assert (await client.request(method, path)).status_code == 422
        assert (await client.get("/healthz")).status_code == 200
    finally:
        server.start()

    await wait_ready(client)
    snap = await client.get(f"/api/runs/{run_id}")
    assert (snap.status_code, snap.json()["status"]) == (200, "queued")
