"""Cost, models and truncation in the snapshot: the hash the script writes equals the fold, and
an attempt whose model has no price makes the cost unknown, never 0."""

from __future__ import annotations

from livestats_shared.events import (
    CallFailed,
    CallStarted,
    CallSucceeded,
    FailureReason,
    PhasePlan,
    RunQueued,
    RunStarted,
    TokenUsage,
)
from livestats_shared.history import read_events, read_snapshot, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.stats import PRODUCER_PREFIX, RunSnapshot, fold


def _attempts() -> list:
    big = TokenUsage(input_tokens=1_000, output_tokens=500)
    cut = TokenUsage(input_tokens=1_000, output_tokens=4_096)
    return [
        RunQueued(
            name="cost",
            planned_calls=3,
            phases=[PhasePlan(name="gen", calls=3, model="big")],
            timeout_s=60,
            tags=["provider-eval"],
        ),
        RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0),  # the gate takes calls after it
        CallStarted(phase="gen", call=0, attempt=1),
        CallSucceeded(
            phase="gen", call=0, attempt=1, duration_s=1, bytes=9, usage=big, model="big", cost_nusd=7_500_000
        ),
        CallStarted(phase="gen", call=1, attempt=1),
        # A truncated answer: a failed attempt that still cost its tokens.
        CallFailed(
            phase="gen",
            call=1,
            attempt=1,
            reason=FailureReason.TRUNCATED,
            duration_s=3,
            final=False,
            usage=cut,
            model="big",
            stop_reason="max_tokens",
            cost_nusd=43_460_000,
        ),
        CallStarted(phase="gen", call=1, attempt=2),
        CallSucceeded(
            phase="gen", call=1, attempt=2, duration_s=1, bytes=9, usage=big, model="big", cost_nusd=7_500_000
        ),
    ]


async def test_cost_models_and_truncation_in_the_hash_equal_the_fold(redis, publisher):
    run_id = new_run_id()
    for event in _attempts():
        publisher.emit(run_id, event)
    assert await publisher.flush(5)
    events = await read_events(redis, run_id)
    h = {k: v for k, v in (await read_stats_hash(redis, run_id)).items() if not k.startswith(PRODUCER_PREFIX)}
    assert h == fold(events)
    snap = await read_snapshot(redis, run_id)
    assert snap is not None
    # The run's cost is the sum of its attempts' costs, the truncated one included.
    assert snap.cost_nusd == 7_500_000 + 43_460_000 + 7_500_000 and snap.unpriced_attempts == 0
    assert snap.cost_usd == 0.05846
    assert (snap.truncated, snap.phases[0].truncated, snap.phases[0].model) == (1, 1, "big")
    assert snap.phases[0].cost_nusd == snap.cost_nusd
    assert snap.tags == ["provider-eval"]
    [big] = snap.models
    assert (big.model, big.attempts, big.input_tokens, big.output_tokens) == ("big", 3, 3_000, 5_096)
    assert big.cost_usd == snap.cost_usd
    # Every attempt's tokens count for the run, the truncated one's too.
    assert (snap.input_tokens, snap.output_tokens) == (3_000, 5_096)


def test_an_unpriced_attempt_makes_the_run_cost_unknown_not_zero():
    events = _attempts()
    unpriced = CallSucceeded(
        phase="gen", call=2, attempt=1, duration_s=1, bytes=9, usage=TokenUsage(input_tokens=5), model="mystery"
    )
    from livestats_shared.events import Event

    stream = [
        Event(type=e.TYPE, run_id="r", seq=i + 1, ts=1_000, data=e.model_dump(mode="json"))
        for i, e in enumerate([*events, CallStarted(phase="gen", call=2, attempt=1), unpriced])
    ]
    snap = RunSnapshot.from_hash("r", fold(stream))
    assert snap.unpriced_attempts == 1 and snap.cost_usd is None
    assert snap.cost_nusd == 58_460_000  # the priced part is still there, as a lower bound
    mystery = next(m for m in snap.models if m.model == "mystery")
    assert mystery.cost_usd is None and mystery.unpriced_attempts == 1
