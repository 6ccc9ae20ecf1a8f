"""static/js/fold.js is the browser's copy of stats.delta_for: folded in Chromium, a run's events
give exactly the snapshot the API serves, for every event type a worker publishes."""

from __future__ import annotations

from run_stack import Stack

EVERY_TYPE = {
    "run.queued",
    "run.started",
    "phase.started",
    "phase.finished",
    "call.started",
    "call.succeeded",
    "call.failed",
    "call.retrying",
    "heartbeat",
    "run.finished",
}
ENDED = ("succeeded", "failed", "timed_out", "cancelled", "stalled")

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
