"""The stats fold, checked by hand on a small run (pure: no Redis)."""

from __future__ import annotations

import orjson
from livestats_shared.events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    Event,
    FailureReason,
    Outcome,
    PhaseFinished,
    PhasePlan,
    RunFinished,
    RunQueued,
    TokenUsage,
    parse_data,
)
from livestats_shared.stats import RunSnapshot, fold


def _events(*payloads) -> list[Event]:
    return [
        Event(type=p.TYPE, run_id="r1", seq=i, ts=1000 + i, data=p.model_dump(mode="json"))
        for i, p in enumerate(payloads, start=1)
    ]


def test_fold_counts_attempts_clears_last_error_on_success_and_balances_in_flight():
    events = _events(
        RunQueued(name="demo", planned_calls=2, phases=[PhasePlan(name="gen", calls=2)], timeout_s=60),
        CallStarted(phase="gen", call=0, attempt=1, predicted_tokens=100),
        CallStarted(phase="gen", call=1, attempt=1, predicted_tokens=100),
        CallFailed(phase="gen", call=0, attempt=1, reason=FailureReason.INVALID_JSON, duration_s=0.1, final=False),
        CallRetrying(phase="gen", call=0, attempt=2, reason=FailureReason.INVALID_JSON, delay_s=0.5),
        CallSucceeded(
            phase="gen",
            call=1,
            attempt=1,
            duration_s=0.2,
            bytes=381,
            usage=TokenUsage(input_tokens=7, output_tokens=30),
        ),
        CallStarted(phase="gen", call=0, attempt=2, predicted_tokens=100),
        CallFailed(phase="gen", call=0, attempt=2, reason=FailureReason.TIMEOUT, duration_s=9, final=True),
        RunFinished(outcome=Outcome.FAILED, reason="calls_given_up", detail="1 of 2 calls failed"),
    )
    h = fold(events)
    assert h["seq"] == "9"
    assert (h["attempts_started"], h["successful_calls"], h["failed_attempts"]) == ("3", "1", "2")
    assert (h["retries"], h["in_flight"], h["calls_done"], h["calls_given_up"]) == ("1", "0", "2", "1")
    # predicted tokens count once per call, not once per attempt
    assert (h["predicted_tokens"], h["input_tokens"], h["output_tokens"], h["total_tokens"]) == ("200", "7", "30", "37")
    assert h["status"] == "failed" and h["reason"] == "calls_given_up"
    # The timeout came after the success, so it is the last error now.
    assert orjson.loads(h["last_error"])["reason"] == "timeout"

    snap = RunSnapshot.from_hash("r1", h)
    assert snap.phases[0].model_dump(include={"name", "planned", "done", "given_up", "actual_tokens"}) == {
        "name": "gen",
        "planned": 2,
        "done": 2,
        "given_up": 1,
        "actual_tokens": 37,  # the one success reported 7 + 30
    }
    assert snap.last_error is not None and snap.last_error["attempt"] == 2


def test_a_success_after_a_failure_clears_last_error():
    events = _events(
        CallStarted(phase="gen", call=0, attempt=1),
        CallFailed(phase="gen", call=0, attempt=1, reason=FailureReason.EMPTY, duration_s=0.1, final=False),
        CallStarted(phase="gen", call=0, attempt=2),
        CallSucceeded(phase="gen", call=0, attempt=2, duration_s=0.1, bytes=10),
    )
    h = fold(events)
    assert "last_error" not in h
    assert h["failed_attempts"] == "1"  # the failure stays in the counts


def test_a_v1_stats_hash_reads_under_the_v2_names():
    v1 = {"total_calls": "5", "failed_calls": "3", "calls_failed": "1", "successful_calls": "2"}
    v1 |= {"phases": '["gen"]', "phase:gen:planned": "3", "phase:gen:done": "3", "phase:gen:failed": "1"}
    snap = RunSnapshot.from_hash("r1", v1)
    assert (snap.attempts_started, snap.failed_attempts, snap.calls_given_up) == (5, 3, 1)
    assert snap.phases[0].given_up == 1


def test_a_v1_phase_finished_payload_still_parses():
    data = parse_data("phase.finished", {"phase": "gen", "index": 0, "succeeded": 2, "failed": 1, "duration_s": 1.0})
    assert isinstance(data, PhaseFinished) and data.given_up == 1
    assert "given_up" in data.model_dump() and "failed" not in data.model_dump()
