"""Estimation over REST: a real worker run with exact simulated token counts, read back through
the gateway. The simulator answers `ceil(len(prompt) / 4)` input tokens and, with no jitter,
exactly FPF_SIM_OUTPUT_TOKENS output tokens, so every figure below is known in advance."""

from __future__ import annotations

import time

import httpx
import pytest
from helpers import wait_finished
from livestats_shared.control import submit_run
from livestats_shared.history import read_events
from livestats_shared.spec import RunSpec

PROMPT = "x" * 40  # 10 input tokens; no placeholders, so every call's prompt is the same
EXACT = {"FPF_SIM_LATENCY_MS": "10", "FPF_SIM_JITTER_MS": "0", "FPF_SIM_TOKEN_JITTER": "0"}


def exact_phase(name: str, calls: int, output_tokens: int, **fields) -> dict:
    env = {**EXACT, "FPF_SIM_OUTPUT_TOKENS": str(output_tokens)}
    return {"name": name, "calls": calls, "prompt": PROMPT, "env": env, **fields}


SPEC = RunSpec.model_validate(
    {
        "name": "estimation",
        "phases": [
            # 2 calls x 100 predicted = 200; actual 2 x (10 + 100) = 220
            exact_phase(
                "build", 2, 100, predicted_tokens=100, category="implementation", complexity="high", deliverables=5
            ),
            # 1 call x 60 predicted = 60; actual 10 + 20 = 30
            exact_phase("docs", 1, 20, predicted_tokens=60, category="documentation", complexity="low", deliverables=1),
            exact_phase("probe", 1, 20, predicted_tokens=5, is_test=True),  # a test sample
            exact_phase("extra", 1, 20),  # no prediction: not a sample
        ],
    }
)


@pytest.fixture
async def client(gateway):
    async with gateway.client() as http:  # the admin token
        yield http


async def test_a_finished_runs_estimation_has_its_phases_samples_and_summaries(
    client, redis, publisher, queue_name, start_worker
):
    since = int(time.time() * 1000)
    await start_worker()
    run_id = await submit_run(redis, publisher, SPEC, queue_name=queue_name)
    await wait_finished(redis, run_id, 30)

    answer = await client.get(f"/api/runs/{run_id}/estimation")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["run_id"], body["status"]) == (run_id, "succeeded")
    assert [(s["phase_id"], s["predicted_tokens"], s["actual_tokens"], s["success"]) for s in body["inputs"]] == [
        (f"{run_id}/build", 200, 220, True),
        (f"{run_id}/docs", 60, 30, True),
        (f"{run_id}/probe", 5, 30, True),
    ]
    build, docs = body["samples"]
    # build: |200 - 220| / 210 = 9.524 %, ratio 200/220, under; docs: 30 / 45 = 66.67 %, ratio 2.0
    assert build["smape"] == pytest.approx(100 * 20 / 210) and build["waste_ratio"] == pytest.approx(200 / 220)
    assert build["underestimated"] and not docs["underestimated"]
    assert docs["smape"] == pytest.approx(100 * 30 / 45) and docs["waste_ratio"] == pytest.approx(2.0)
    assert [s["phase_id"] for s in body["test_samples"]] == [f"{run_id}/probe"]
    summary = body["summary"]
    assert summary["count"] == 2
    assert summary["mean_smape"] == pytest.approx((100 * 20 / 210 + 100 * 30 / 45) / 2)
    assert summary["median_waste_ratio"] == pytest.approx((200 / 220 + 2.0) / 2)
    assert (summary["underestimation_rate"], summary["success_rate"]) == (50.0, 100.0)
    assert list(body["by_category"]) == ["documentation", "implementation"]
    assert list(body["by_deliverables"]) == ["1-3", "4-7"]

    # The live totals agree: 4 predicted phases' calls at attempt 1, every answer's usage.
    snap = (await client.get(f"/api/runs/{run_id}")).json()
    assert (snap["predicted_tokens"], snap["total_tokens"]) == (2 * 100 + 60 + 5, 220 + 3 * 30)
    assert [p["actual_tokens"] for p in snap["phases"]] == [220, 30, 30, 30]

    # The phase events say the same: what each phase declared, and what its answers reported.
    events = await read_events(redis, run_id)
    started = [e.payload() for e in events if e.type == "phase.started"]
    assert [(p.category, p.complexity, p.deliverables, p.predicted_tokens) for p in started[:2]] == [
        ("implementation", "high", 5, 200),
        ("documentation", "low", 1, 60),
    ]
    assert [e.data["actual_tokens"] for e in events if e.type == "phase.finished"] == [220, 30, 30, 30]

    across = (await client.get("/api/estimation", params={"since": since})).json()
    assert (across["runs_examined"], across["runs_with_samples"]) == (1, 1)
    assert across["summary"] == summary
    future = (await client.get("/api/estimation", params={"since": int(time.time() * 1000) + 60_000})).json()
    assert (future["runs_examined"], future["summary"]["count"]) == (0, 0)


@pytest.mark.parametrize(("run_id", "status"), [("no-such-run", 404), ("a:b", 422), ("UPPER", 422)])
async def test_estimation_of_an_unknown_or_invalid_run_is_an_error(client, run_id, status):
    answer = await client.get(f"/api/runs/{run_id}/estimation")
    assert answer.status_code == status, answer.text


async def test_the_across_runs_report_refuses_a_bad_limit(client):
    answer = await client.get("/api/estimation", params={"limit": 0})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_estimation_needs_a_token_and_shows_only_runs_the_caller_may_see(
    gateway, redis, publisher, make_token, queue_name, start_worker
):
    since = int(time.time() * 1000)
    await start_worker()
    run_id = await submit_run(redis, publisher, SPEC, queue_name=queue_name, owner="alice")
    await wait_finished(redis, run_id, 30)
    alice, bob = await make_token("alice", "read"), await make_token("bob", "read")

    async with (
        gateway.client(alice) as as_alice,
        gateway.client(bob) as as_bob,
        httpx.AsyncClient(base_url=gateway.http) as anonymous,
    ):
        assert (await anonymous.get(f"/api/runs/{run_id}/estimation")).status_code == 401
        assert (await anonymous.get("/api/estimation")).status_code == 401
        assert (await as_alice.get(f"/api/runs/{run_id}/estimation")).json()["summary"]["count"] == 2
        # Someone else's run answers like one that does not exist.
        assert (await as_bob.get(f"/api/runs/{run_id}/estimation")).status_code == 404
        mine = (await as_alice.get("/api/estimation", params={"since": since})).json()
        theirs = (await as_bob.get("/api/estimation", params={"since": since})).json()
    assert (mine["runs_examined"], mine["summary"]["count"]) == (1, 2)
    assert (theirs["runs_examined"], theirs["summary"]["count"]) == (0, 0)
