"""Cost, comparison and calibration over REST, on runs published to a real server and read
through a real gateway. Each test tags its runs uniquely: the server is shared with other tests."""

from __future__ import annotations

import random
import secrets

import pytest
from analysis_runs import publish_run

PRICES = '{"models": {"big": [{"effective_from": "2020-01-01", "input_per_mtok": 2.5, "output_per_mtok": 10}]}}'


@pytest.fixture
def tag() -> str:
    return "t" + secrets.token_hex(4)


async def test_models_compare_across_the_callers_runs_with_costs_and_unknown_prices(
    start_gateway, publisher, make_token, tag
):
    gateway = start_gateway(prices=PRICES)
    await publish_run(publisher, owner="alice", tag=tag, model="big", calls=3, out_tokens=500)
    await publish_run(publisher, owner="alice", tag=tag, model="mystery", calls=2, out_tokens=50)
    bob_run = await publish_run(publisher, owner="bob", tag=tag, model="big", calls=5, out_tokens=1)
    alice = await make_token("alice", "read")
    async with gateway.client(alice) as http:
        answer = await http.get("/api/compare", params={"tag": tag})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows = {r["model"]: r for r in body["rows"]}
        assert body["selection"]["runs_examined"] == 2  # bob's run is not hers
        big = rows["big"]
        assert (big["calls"], big["successful_calls"], big["success_rate"]) == (3, 3, 100.0)
        # 100 in at $2.50/M + 500 out at $10/M = $0.00525 per call
        assert big["cost_per_success_usd"] == pytest.approx(0.00525)
        assert big["latency_p50_s"] == pytest.approx(1.5) and big["input_tokens"] == 300
        unknown = rows["mystery"]
        assert unknown["cost_usd"] is None and unknown["unpriced_attempts"] == 2  # unknown, not $0
        only_big = (await http.get("/api/compare", params={"tag": tag, "model": "big"})).json()
        assert [r["model"] for r in only_big["rows"]] == ["big"]
        # Someone else's run answers exactly like a missing one; a malformed id is a 422.
        assert (await http.get("/api/compare", params={"run": bob_run})).status_code == 404
        assert (await http.get("/api/compare", params={"run": "a:b"})).status_code == 422
        prices = (await http.get("/api/prices")).json()
        assert prices["models"]["big"][0]["output_per_mtok"] == 10


async def test_run_snapshot_carries_cost_per_run_phase_and_model(start_gateway, publisher, tag):
    gateway = start_gateway(prices=PRICES)
    run_id = await publish_run(publisher, owner="alice", tag=tag, model="big", calls=2, out_tokens=500)
    async with gateway.client() as http:
        snap = (await http.get(f"/api/runs/{run_id}")).json()
    assert snap["cost_nusd"] == 2 * 5_250_000 and snap["cost_usd"] == pytest.approx(0.0105)
    assert snap["phases"][0]["cost_nusd"] == snap["cost_nusd"] and snap["phases"][0]["model"] == "big"
    assert [(m["model"], m["attempts"], m["cost_usd"]) for m in snap["models"]] == [("big", 2, pytest.approx(0.0105))]
    assert snap["tags"] == [tag]


async def test_calibration_over_runs_recovers_the_bias_and_predicts(start_gateway, publisher, tag):
    gateway = start_gateway()
    rng = random.Random(7)
    bias = {"implementation": 1.5, "testing": 0.7}
    for category, factor in bias.items():
        for _ in range(8):
            out = rng.randint(200, 2_000)
            actual = 100 + out
            predicted = round(actual / factor * rng.uniform(0.97, 1.03))
            await publish_run(
                publisher,
                owner="alice",
                tag=tag,
                model="big",
                calls=1,
                out_tokens=out,
                predicted=predicted,
                category=category,
                complexity="medium",
            )
    async with gateway.client() as http:
        answer = await http.get("/api/calibration", params={"tag": tag, "by": ["category"], "min_samples": 4})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        factors = {s["stratum"]: s["factor"] for s in body["strata"]}
        assert factors["category=implementation"] == pytest.approx(1.5, rel=0.05)
        assert factors["category=testing"] == pytest.approx(0.7, rel=0.05)
        assert body["improved"] and body["smape_after_cv"] < body["smape_before"]
        assert body["selection"]["runs_examined"] == 16
        predicted = await http.get(
            "/api/calibration/predict",
            params={"tag": tag, "by": ["category"], "min_samples": 4, "category": "testing", "predicted_tokens": 1000},
        )
        assert predicted.status_code == 200, predicted.text
        p = predicted.json()
        assert p["stratum"] == "category=testing" and p["calibrated_tokens"] == round(1000 * p["factor"])
        bad = await http.get("/api/calibration", params={"by": ["colour"]})
        assert bad.status_code == 422 and "stratify" in bad.text


async def test_a_hand_written_stream_entry_is_skipped_not_a_500(start_gateway, publisher, redis, tag):
    from livestats_shared import keys

    gateway = start_gateway(prices=PRICES)
    run_id = await publish_run(publisher, owner="alice", tag=tag, model="big", calls=2, out_tokens=10)
    await redis.xadd(keys.run_events(run_id), {"note": "added by hand"})
    async with gateway.client() as http:
        answer = await http.get("/api/compare", params={"run": run_id})
    assert answer.status_code == 200, answer.text
    assert [(r["model"], r["calls"]) for r in answer.json()["rows"]] == [("big", 2)]
