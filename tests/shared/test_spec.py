"""Run spec validation: every bad field is named in the error."""

from __future__ import annotations

import pytest
from livestats_shared.spec import PhaseSpec, RunSpec
from pydantic import ValidationError


def test_the_retry_budget_is_a_share_of_planned_calls_with_a_floor():
    spec = RunSpec(phases=[PhaseSpec(name="g", calls=100), PhaseSpec(name="e", calls=50)])
    assert (spec.planned_calls, spec.retry_budget) == (150, 30)
    assert RunSpec(phases=[PhaseSpec(name="g", calls=2)]).retry_budget == 3  # retry_budget_min


@pytest.mark.parametrize(
    ("phase", "field", "message"),
    [
        # LD_PRELOAD and the like are refused by the operator's allowlist (tests/shared/test_fpf_env.py).
        ({"name": "g", "calls": 1, "env": {"LIVESTATS_REDIS_URL": "x"}}, "env", "set by the worker itself"),
        ({"name": "g", "calls": 1, "env": {"LD PRELOAD": "/x.so"}}, "env", "not environment variable names"),
        ({"name": "g", "calls": 1, "env": {"FPF_X": "a\0b"}}, "env", "NUL"),
        ({"name": "g", "calls": 1, "min_bytes": 3072}, None, "output='text' only"),
        ({"name": "g h", "calls": 1}, "name", "phase name"),
        ({"name": "g", "calls": 0}, "calls", "greater than or equal to 1"),
        ({"name": "g", "calls": 1, "shell": "rm -rf /"}, "shell", "Extra inputs"),
        ({"name": "g", "calls": 1, "category": "Big Refactor"}, "category", "should match pattern"),
        ({"name": "g", "calls": 1, "complexity": "huge"}, "complexity", "'low', 'medium', 'high' or 'maintenance'"),
        ({"name": "g", "calls": 1, "deliverables": 0}, "deliverables", "greater than or equal to 1"),
        ({"name": "g", "calls": 1, "predicted_tokens": -5}, "predicted_tokens", "greater than or equal to 0"),
    ],
)
def test_invalid_phases_are_rejected_with_the_field_at_fault(phase, field, message):
    with pytest.raises(ValidationError) as err:
        RunSpec.model_validate({"phases": [phase]})
    assert message in str(err.value)
    if field:
        assert field in err.value.errors()[0]["loc"]


def test_phase_names_must_be_unique():
    with pytest.raises(ValidationError, match="unique"):
        RunSpec(phases=[PhaseSpec(name="g", calls=1), PhaseSpec(name="g", calls=1)])


def test_text_mode_may_require_a_minimum_size():
    assert PhaseSpec(name="g", calls=1, output="text", min_bytes=3072).min_bytes == 3072


def test_an_oversized_spec_is_refused_with_its_size():
    huge = [PhaseSpec(name=f"p{i}", calls=1, prompt="x" * 90_000) for i in range(12)]
    with pytest.raises(ValidationError, match="at most 1048576"):
        RunSpec(phases=huge)


def test_the_plan_states_each_phases_estimation_fields_and_its_whole_prediction():
    spec = RunSpec(
        phases=[
            PhaseSpec(name="g", calls=4, predicted_tokens=250, category="testing", complexity="low", deliverables=2),
            PhaseSpec(name="e", calls=3, is_test=True),
        ]
    )
    gen, ev = spec.plan()
    # 4 calls x 250 predicted per call
    assert (gen.predicted_tokens, gen.category, gen.complexity, gen.deliverables) == (1000, "testing", "low", 2)
    assert (ev.predicted_tokens, ev.category, ev.is_test) == (None, None, True)
