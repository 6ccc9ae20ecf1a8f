"""What the dashboard's browser tests share: the two window sizes the issue names, waits, the
horizontal-overflow check, and a run published straight to Redis that ended each way."""

from __future__ import annotations

import time
from typing import Any

import pytest
from livestats_shared.events import (
    CallFailed,
    CallStarted,
    CallSucceeded,
    FailureReason,
    Outcome,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
    TokenUsage,
    phase_end_state,
)
from livestats_shared.ids import new_run_id
from playwright.async_api import Page, ViewportSize

PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1440, height=900)
VIEWPORTS = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1440x900"])
SLOW = 45_000  # ms: a whole run on a busy 2-core machine
QUICK = 15_000  # ms: one page update

ENDINGS = (
    (Outcome.FAILED, "retry_budget_exhausted", "12 retries used of a budget of 12"),
    (Outcome.TIMED_OUT, "deadline", "the run's 30 s deadline passed; its processes were killed"),
    (Outcome.CANCELLED, "cancelled", "cancelled from the dashboard by alice"),
    (Outcome.STALLED, "no_heartbeat", "no heartbeat for 12 s from worker w-1"),
)

# Document wider than the window: something overflows horizontally.
OVERFLOW = "() => [document.documentElement.scrollWidth, window.innerWidth]"


async def assert_no_horizontal_overflow(page: Page) -> None:
    width, viewport = await page.evaluate(OVERFLOW)
    assert width <= viewport, f"document {width} px wide in a {viewport} px window ({page.url})"


async def publish_ended_run(publisher: Any, outcome: Outcome, reason: str, detail: str) -> str:
    """A run whose last call was cancelled mid-flight (the trap: its error is not the run's
    reason) and whose phase the run's end closed."""
    run_id = new_run_id()
    phases = [PhasePlan(name="generate-a-rather-long-phase-name", calls=40, predicted_tokens=4_000)]
    await publisher.publish(
        run_id, RunQueued(name=f"ended {outcome.value} " + "x" * 60, planned_calls=40, phases=phases, timeout_s=30)
    )
    deadline = int(time.time() * 1000) + 30_000
    publisher.emit(run_id, RunStarted(worker="w-1", timeout_s=30, deadline_ts=deadline, retry_budget=12))
    publisher.emit(run_id, PhaseStarted(phase=phases[0].name, index=0, calls=40, concurrency=2))
    for call in range(3):
        publisher.emit(run_id, CallStarted(phase=phases[0].name, call=call, attempt=1))
        publisher.emit(
            run_id,
            CallSucceeded(
                phase=phases[0].name,
                call=call,
                attempt=1,
                duration_s=0.4,
                bytes=200,
                usage=TokenUsage(input_tokens=50, output_tokens=250),
            ),
        )
    publisher.emit(run_id, CallStarted(phase=phases[0].name, call=3, attempt=1))
    publisher.emit(
        run_id,
        CallFailed(
            phase=phases[0].name,
            call=3,
            attempt=1,
            reason=FailureReason.CANCELLED,
            excerpt="cancelled: its processes were killed " + "y" * 300,
            duration_s=1.0,
            final=True,
        ),
    )
    # The run's end closes its open phase with the state its outcome gives (the gate requires it).
    end = PhaseFinished(
        phase=phases[0].name, index=0, succeeded=3, given_up=1, duration_s=2.0, state=phase_end_state(outcome)
    )
    publisher.emit(run_id, end)
    await publisher.publish(run_id, RunFinished(outcome=outcome, reason=reason, detail=detail))
    return run_id
