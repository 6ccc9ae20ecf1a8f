"""Model comparison over generated runs reproduces the distributions the runs were drawn from."""

from __future__ import annotations

import random
import statistics

import pytest
from livestats_shared.comparison import compare, percentile
from livestats_shared.events import Event

# Per model: chance an attempt succeeds, latency (lognormal mu, sigma), output tokens mean,
# price in nano-USD per output token (None: the model has no price).
MODELS = {
    "fast": {"p_ok": 0.95, "mu": -0.5, "sigma": 0.3, "out": 400, "nusd_per_token": 600},
    "smart": {"p_ok": 0.80, "mu": 1.0, "sigma": 0.4, "out": 1_500, "nusd_per_token": 10_000},
}
MAX_ATTEMPTS = 3


def _run(run_id: str, model: str, rng: random.Random, calls: int = 40) -> list[Event]:
    m = MODELS[model]
    out: list[tuple[str, dict]] = [
        (
            "phase.started",
            {
                "phase": "gen",
                "index": 0,
                "calls": calls,
                "concurrency": 4,
                "predicted_tokens": calls * (m["out"] + 100),
                "model": model,
            },
        )
    ]
    for call in range(calls):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            out.append(("call.started", {"phase": "gen", "call": call, "attempt": attempt}))
            latency = rng.lognormvariate(m["mu"], m["sigma"])
            tokens = max(1, round(rng.gauss(m["out"], m["out"] * 0.1)))
            if rng.random() < m["p_ok"]:
                usage = {"input_tokens": 100, "output_tokens": tokens}
                out.append(
                    (
                        "call.succeeded",
                        {
                            "phase": "gen",
                            "call": call,
                            "attempt": attempt,
                            "duration_s": latency,
                            "bytes": 10,
                            "usage": usage,
                            "model": model,
                            "cost_nusd": tokens * m["nusd_per_token"],
                        },
                    )
                )
                break
            final = attempt == MAX_ATTEMPTS
            out.append(
                (
                    "call.failed",
                    {
                        "phase": "gen",
                        "call": call,
                        "attempt": attempt,
                        "reason": "exit_code",
                        "duration_s": latency,
                        "final": final,
                        "model": model,
                    },
                )
            )
            if not final:
                out.append(
                    (
                        "call.retrying",
                        {"phase": "gen", "call": call, "attempt": attempt + 1, "reason": "exit_code", "delay_s": 0.1},
                    )
                )
    out.append(("phase.finished", {"phase": "gen", "index": 0, "succeeded": 0, "given_up": 0, "duration_s": 1.0}))
    return [Event(type=t, run_id=run_id, seq=i + 1, ts=1_000 + i, data=d) for i, (t, d) in enumerate(out)]


def test_twenty_generated_runs_reproduce_each_models_distribution():
    rng = random.Random(20)
    runs = [(f"run-{i}", _run(f"run-{i}", "fast" if i % 2 else "smart", rng)) for i in range(20)]
    rows = {r.model: r for r in compare(runs).rows}
    assert set(rows) == set(MODELS)
    for name, m in MODELS.items():
        row = rows[name]
        assert row.runs == 10 and row.calls == 400 and row.phase == "gen"
        # A call fails for good only when every attempt fails: 1 - (1 - p)^3.
        expected_success = 100 * (1 - (1 - m["p_ok"]) ** MAX_ATTEMPTS)
        assert row.success_rate == pytest.approx(expected_success, abs=2.5)
        # Expected retries per call: P(attempt 1 fails) + P(attempts 1 and 2 fail).
        q = 1 - m["p_ok"]
        assert row.retries_per_call == pytest.approx(q + q * q, abs=0.05)
        # Lognormal median exp(mu); p95 exp(mu + 1.645 sigma).
        assert row.latency_p50_s == pytest.approx(2.718281828 ** m["mu"], rel=0.08)
        assert row.latency_p95_s == pytest.approx(2.718281828 ** (m["mu"] + 1.645 * m["sigma"]), rel=0.12)
        assert row.output_tokens / row.successful_calls == pytest.approx(m["out"], rel=0.03)
        assert row.cost_per_success_usd == pytest.approx(m["out"] * m["nusd_per_token"] / 1e9, rel=0.03)
        assert row.unpriced_attempts == 0 and row.smape_samples == 10
        assert row.mean_smape is not None and row.mean_smape < 5  # predicted = calls x (input + mean output)


def test_an_attempt_with_usage_and_no_price_makes_the_cost_unknown_not_zero():
    events = _run("r", "fast", random.Random(1), calls=3)
    priced = compare([("r", events)]).rows[0]
    assert priced.cost_usd is not None and priced.cost_usd > 0
    stripped = [e.model_copy(update={"data": {k: v for k, v in e.data.items() if k != "cost_nusd"}}) for e in events]
    unpriced = compare([("r", stripped)]).rows[0]
    assert unpriced.cost_usd is None and unpriced.cost_per_success_usd is None
    assert unpriced.unpriced_attempts == unpriced.successful_calls == 3


def test_a_model_filter_keeps_only_the_named_models():
    rng = random.Random(2)
    runs = [("a", _run("a", "fast", rng, calls=2)), ("b", _run("b", "smart", rng, calls=2))]
    assert [r.model for r in compare(runs, models={"smart"}).rows] == ["smart"]


def test_percentile_interpolates_like_numpy():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 50) == statistics.median(values)
