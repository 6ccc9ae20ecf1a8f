"""static/js/fold.js is the browser's copy of stats.delta_for: folded in Chromium, a run's events
give exactly the snapshot the API serves, for every event type a worker publishes."""

from __future__ import annotations

import time

from livestats_shared.control import TERMINAL
from livestats_shared.events import (
    DATA_MODELS,
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    FailureReason,
    Heartbeat,
    Outcome,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
    TokenUsage,
)
from livestats_shared.ids import new_run_id
from playwright.async_api import expect
from run_stack import Stack

EVERY_TYPE = set(DATA_MODELS)  # every type the contract defines
ENDED = tuple(TERMINAL)

FOLD = """async ([runId, events]) => {
  const { applyEvent, emptySnapshot } = await import("/static/js/fold.js");
  const snap = emptySnapshot(runId);
  for (const ev of events) applyEvent(snap, ev);
  return snap;
}"""


async def all_events(stack: Stack, run_id: str) -> list[dict]:
    events: list[dict] = []
    after: str | None = None
    while True:
        params = {"after": after} if after else {}
        answer = await stack.http.get(f"/api/runs/{run_id}/events", params=params)
        answer.raise_for_status()
        page = answer.json()
        events += page["events"]
        if not page["events"] or page["next"] is None:
            return events
        after = page["next"]


async def test_the_pages_fold_of_every_event_type_equals_the_api_snapshot(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    sim = {"FPF_SIM_LATENCY_MS": "150", "FPF_SIM_JITTER_MS": "20"}
    estimate = {"predicted_tokens": 300, "category": "testing", "complexity": "low", "deliverables": 2}
    run_id = await stack.submit(
        {
            "name": "every-event",
            "retry_budget_ratio": 2.0,
            "backoff_base_s": 0.0,
            "phases": [
                # Each call fails once (call.failed, call.retrying), then succeeds.
                {
                    "name": "flaky",
                    "calls": 3,
                    "concurrency": 1,
                    "max_attempts": 2,
                    "env": {**sim, "FPF_SIM_FAIL_FIRST": "1"},
                    **estimate,
                },
                # A call that fails for good: a final call.failed and a failed phase.
                {
                    "name": "doomed",
                    "calls": 1,
                    "max_attempts": 1,
                    "is_test": True,
                    "env": {**sim, "FPF_SIM_BEHAVIOUR": "fail"},
                },
            ],
        },
        token,
    )
    expected = await stack.wait_status(run_id, ENDED)
    events = await all_events(stack, run_id)
    assert {e["type"] for e in events} == EVERY_TYPE, "the spec no longer produces every event type"
    assert [e["seq"] for e in events] == list(range(1, expected["seq"] + 1))

    folded = await page.evaluate(FOLD, [run_id, events])
    assert folded == expected


async def _publish_every_kind_of_event(publisher, run_id: str) -> None:
    plan = [
        PhasePlan(
            name="gen", calls=2, category="implementation", complexity="high", deliverables=3, predicted_tokens=900
        ),
        PhasePlan(name="judge", calls=1, is_test=True),
    ]
    await publisher.publish(run_id, RunQueued(name="every kind", planned_calls=3, phases=plan, timeout_s=60))
    now_ms = int(time.time() * 1000)
    steps = [
        RunStarted(worker="w1", timeout_s=60, deadline_ts=now_ms + 60_000, retry_budget=3, heartbeat_s=0.5),
        PhaseStarted(phase="gen", index=0, calls=2, concurrency=2, predicted_tokens=900),
        CallStarted(phase="gen", call=0, attempt=1, predicted_tokens=450),
        CallStarted(phase="gen", call=1, attempt=1, predicted_tokens=450),
        CallFailed(
            phase="gen",
            call=0,
            attempt=1,
            reason=FailureReason.INVALID_JSON,
            excerpt="<html>",
            duration_s=0.2,
            final=False,
        ),
        CallRetrying(phase="gen", call=0, attempt=2, reason=FailureReason.INVALID_JSON, delay_s=0.5),
        CallStarted(phase="gen", call=0, attempt=2, predicted_tokens=450),
        CallSucceeded(
            phase="gen",
            call=1,
            attempt=1,
            duration_s=1.5,
            bytes=400,
            usage=TokenUsage(input_tokens=100, output_tokens=300),
        ),
        Heartbeat(elapsed_s=2.0, remaining_s=58.0, in_flight=1, pids=[4242]),
        PhaseStarted(phase="judge", index=1, calls=1, concurrency=1),
        CallStarted(phase="judge", call=0, attempt=1),
        CallSucceeded(phase="judge", call=0, attempt=1, duration_s=0.4, bytes=90),
        CallFailed(
            phase="gen", call=0, attempt=2, reason=FailureReason.TIMEOUT, excerpt="killed", duration_s=9.0, final=True
        ),
        PhaseFinished(phase="gen", index=0, succeeded=1, given_up=1, duration_s=11.0),
        PhaseFinished(phase="judge", index=1, succeeded=1, given_up=0, duration_s=0.5, actual_tokens=777),
        RunFinished(outcome=Outcome.FAILED, reason="calls_given_up", detail="1 call failed", elapsed_s=12.0),
    ]
    for data in steps:
        await publisher.publish(run_id, data)


async def test_the_pages_fold_of_estimates_reported_totals_and_a_final_failure_equals_the_api(
    stack, browser, login, publisher
):
    """What a worker run does not produce: plan estimates, a test phase, a phase total stated by
    the producer, a final failure after the last success (the last error stays), and the page's
    own counters, status and last-error panel for it."""
    run_id = new_run_id()
    await _publish_every_kind_of_event(publisher, run_id)
    served = await stack.snapshot(run_id)
    events = (await stack.http.get(f"/api/runs/{run_id}/events")).json()["events"]
    assert len(events) == served["seq"] == 17

    page = await login(await browser.new_context(), stack.gateway.token)
    await page.goto(f"/runs/{run_id}")
    await expect(page.get_by_test_id("event-log")).to_have_attribute("data-count", "17", timeout=15_000)
    folded = await page.evaluate(FOLD, [run_id, events])
    assert folded == served  # every field, phases and last_error included
    for field in ("attempts_started", "successful_calls", "failed_attempts", "retries", "in_flight", "calls_done"):
        await expect(page.locator(f"[data-counter={field}]")).to_have_text(str(served[field]))
    await expect(page.get_by_test_id("run-status")).to_have_text("failed")
    # The final failure came after the last success, so it is the last error on both sides.
    assert served["last_error"]["reason"] == "timeout"
    await expect(page.get_by_test_id("last-error")).to_contain_text("timeout")
    for chart in ("chart-calls", "chart-tokens", "chart-latency"):
        await expect(page.get_by_test_id(chart).locator("canvas")).to_have_count(1)
    await browser.screenshot(page)
