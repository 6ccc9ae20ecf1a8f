"""The live view `livestats up` and `submit --wait` print: predicted against actual tokens."""

from __future__ import annotations

import io

from livestats_cli.follow import ProgressView
from livestats_shared.events import (
    CallStarted,
    CallSucceeded,
    Event,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunQueued,
    TokenUsage,
)


def test_a_finished_phase_line_shows_its_tokens_against_the_prediction():
    plan = [PhasePlan(name="gen", calls=2, predicted_tokens=200)]
    payloads = [
        RunQueued(name="r", planned_calls=2, phases=plan, timeout_s=60),
        PhaseStarted(phase="gen", index=0, calls=2, concurrency=2, predicted_tokens=200),
        CallStarted(phase="gen", call=0, attempt=1, predicted_tokens=100),
        CallStarted(phase="gen", call=1, attempt=1, predicted_tokens=100),
        CallSucceeded(phase="gen", call=0, attempt=1, duration_s=0.1, bytes=9, usage=TokenUsage(output_tokens=80)),
        CallSucceeded(phase="gen", call=1, attempt=1, duration_s=0.1, bytes=9, usage=TokenUsage(output_tokens=100)),
        PhaseFinished(phase="gen", index=0, succeeded=2, given_up=0, duration_s=1.5, actual_tokens=180),
    ]
    out = io.StringIO()
    view = ProgressView("r1", out)
    for seq, p in enumerate(payloads, start=1):
        view.update(Event(type=p.TYPE, run_id="r1", seq=seq, ts=1_000 + seq, data=p.model_dump(mode="json")))
    lines = out.getvalue().splitlines()
    # |200 - 180| / 190 = 10.53 %
    assert "phase gen done: 2 ok, 0 given up in 1.5 s; tokens 180 of 200 predicted (SMAPE 10.5 %)" in lines
    assert lines[-1].endswith("| tokens 180 (predicted 200)")
