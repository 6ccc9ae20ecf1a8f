"""A real worker prices each attempt at the operator's table: the run's cost is the sum of its
calls' costs, an unknown model is unknown (never $0), truncated answers are failed attempts
that still cost their tokens, and a later price change does not rewrite a finished run."""

from __future__ import annotations

import orjson
import pytest
from helpers import wait_finished
from livestats_shared.control import submit_run
from livestats_shared.events import CallFailed, CallSucceeded
from livestats_shared.history import read_events, read_snapshot, read_stats_hash
from livestats_shared.pricing import parse_price_table
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.stats import PRODUCER_PREFIX, fold

EXACT = {"FPF_SIM_LATENCY_MS": "10", "FPF_SIM_JITTER_MS": "0", "FPF_SIM_TOKEN_JITTER": "0"}
PRICES = {
    "models": {
        "fpf-sim-1": [{"effective_from": "2020-01-01", "input_per_mtok": 3, "output_per_mtok": 15}],
        "sim-pro": [{"effective_from": "2020-01-01", "input_per_mtok": 10, "output_per_mtok": 30}],
    }
}


def phase(name: str, calls: int, **env: str) -> PhaseSpec:
    return PhaseSpec(name=name, calls=calls, env={**EXACT, "FPF_SIM_OUTPUT_TOKENS": "200", **env}, max_attempts=2)


async def test_the_runs_cost_is_the_sum_of_its_attempts_at_the_table_in_effect(
    redis, publisher, start_worker, queue_name
):
    await start_worker(prices=orjson.dumps(PRICES).decode())
    spec = RunSpec(
        phases=[
            phase("base", 3),
            phase("pro", 2, FPF_SIM_MODEL="sim-pro"),
            phase("cut", 1, FPF_SIM_BEHAVIOUR="max_tokens"),
        ],
        retry_budget_min=5,
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_finished(redis, run_id, 60)
    events = await read_events(redis, run_id)
    stats = await read_stats_hash(redis, run_id)
    assert {k: v for k, v in stats.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)

    attempts = [p for e in events if isinstance(p := e.payload(), CallSucceeded | CallFailed)]
    table = parse_price_table(PRICES)
    for a in attempts:
        assert a.usage is not None and a.model in ("fpf-sim-1", "sim-pro")
        # Each attempt's cost is its own usage at its model's price (priced when it ended).
        assert a.cost_nusd == table.cost_nusd(a.model, 1_700_000_000_000, a.usage.input_tokens, a.usage.output_tokens)
    snap = await read_snapshot(redis, run_id)
    assert snap is not None
    # (each a.cost_nusd was compared with a price above, so `or 0` never applies)
    assert snap.cost_nusd == sum(a.cost_nusd or 0 for a in attempts) and snap.unpriced_attempts == 0
    by_phase = {p.name: p for p in snap.phases}
    assert by_phase["pro"].cost_nusd == sum(a.cost_nusd or 0 for a in attempts if a.phase == "pro")
    # The truncated phase: both attempts failed `truncated`, each still priced.
    cut = [a for a in attempts if a.phase == "cut"]
    assert [(a.reason.value, a.stop_reason) for a in cut] == [("truncated", "max_tokens")] * 2
    assert by_phase["cut"].truncated == 2 == snap.truncated and by_phase["cut"].cost_nusd > 0
    assert {m.model for m in snap.models} == {"fpf-sim-1", "sim-pro"}

    # A price change takes effect for new calls only: this run's recorded cost stays.
    recorded = snap.cost_nusd
    await start_worker(
        prices=orjson.dumps(
            {"models": {"fpf-sim-1": [{"effective_from": "2020-01-01", "input_per_mtok": 99, "output_per_mtok": 99}]}}
        ).decode()
    )
    again = await read_snapshot(redis, run_id)
    assert again is not None and again.cost_nusd == recorded


async def test_an_unpriced_model_makes_the_cost_unknown(redis, publisher, start_worker, queue_name):
    await start_worker(prices=orjson.dumps(PRICES).decode())
    spec = RunSpec(phases=[phase("base", 1), phase("mystery", 1, FPF_SIM_MODEL="mystery-9")])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_finished(redis, run_id, 60)
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and snap.unpriced_attempts == 1 and snap.cost_usd is None
    assert snap.cost_nusd > 0  # the priced part is kept: a lower bound, shown as unknown
    mystery = next(m for m in snap.models if m.model == "mystery-9")
    assert mystery.cost_usd is None


def test_a_bad_price_table_stops_the_worker_at_start():
    from livestats_shared.pricing import InvalidPriceTable
    from livestats_worker.config import WorkerConfig

    with pytest.raises(InvalidPriceTable, match="output_per_mtok"):
        WorkerConfig(prices='{"models": {"m": [{"effective_from": "2026-01-01", "input_per_mtok": 1}]}}')
