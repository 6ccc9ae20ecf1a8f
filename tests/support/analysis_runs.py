"""Runs with models, costs and estimates, published as a worker would, for the analysis tests."""

from __future__ import annotations

from livestats_shared.events import (
    CallStarted,
    CallSucceeded,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunQueued,
    RunStarted,
    TokenUsage,
)
from livestats_shared.ids import new_run_id


async def publish_run(
    publisher,
    *,
    owner: str,
    tag: str,
    model: str,
    calls: int,
    out_tokens: int,
    predicted=None,
    category="implementation",
    complexity="high",
) -> str:
    run_id = new_run_id()
    plan = PhasePlan(
        name="gen", calls=calls, model=model, predicted_tokens=predicted, category=category, complexity=complexity
    )
    publisher.emit(
        run_id, RunQueued(name=f"run {tag}", planned_calls=calls, phases=[plan], timeout_s=60, owner=owner, tags=[tag])
    )
    # The gate takes calls after run.started; a long heartbeat_s keeps the stall monitor away.
    publisher.emit(run_id, RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0, heartbeat_s=3600))
    publisher.emit(
        run_id,
        PhaseStarted(
            phase="gen",
            index=0,
            calls=calls,
            concurrency=1,
            model=model,
            predicted_tokens=predicted,
            category=category,
            complexity=complexity,
        ),
    )
    used = 0
    for call in range(calls):
        usage = TokenUsage(input_tokens=100, output_tokens=out_tokens)
        used += usage.total_tokens
        cost = 100 * 2_500 + out_tokens * 10_000 if model == "big" else None
        publisher.emit(run_id, CallStarted(phase="gen", call=call, attempt=1))
        publisher.emit(
            run_id,
            CallSucceeded(
                phase="gen",
                call=call,
                attempt=1,
                duration_s=0.5 + call,
                bytes=10,
                usage=usage,
                model=model,
                cost_nusd=cost,
            ),
        )
    publisher.emit(run_id, PhaseFinished(phase="gen", index=0, succeeded=calls, given_up=0, duration_s=calls))
    assert await publisher.flush(10)
    return run_id
