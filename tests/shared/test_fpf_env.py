"""The one rule for a spec's `env` that the gateway, the CLI and the worker share."""

from __future__ import annotations

import pytest
from livestats_gateway.config import GatewayConfig
from livestats_shared.fpf_env import SpecEnvRefused, check_spec_env, env_refusal
from livestats_shared.spec import PhaseSpec
from livestats_worker.config import WorkerConfig
from pydantic import ValidationError


@pytest.mark.parametrize(
    "key", ["FPF_RUN_ID", "FPF_PHASE", "FPF_CALL", "FPF_ATTEMPT", "FPF_OUTPUT_MODE", "LIVESTATS_CALL", "LIVESTATS_X"]
)
def test_keys_the_worker_sets_are_refused_whatever_the_allowlist_says(key):
    assert "set by the worker itself" in (env_refusal(key, ["*"]) or "")
    with pytest.raises(ValidationError, match=key):
        PhaseSpec(name="p", calls=1, env={key: "x"})


def test_only_keys_matching_an_allowlist_pattern_are_allowed():
    allow = ["FPF_SIM_*", "OPENAI_MODEL"]
    assert env_refusal("FPF_SIM_LATENCY_MS", allow) is None
    assert env_refusal("OPENAI_MODEL", allow) is None
    assert env_refusal("OPENAI_MODEL_X", allow) is not None
    assert env_refusal("fpf_sim_latency_ms", allow) is not None  # case-sensitive, like env names
    assert env_refusal("FPF_SIM_LATENCY_MS", []) is not None  # the default allows nothing


def test_a_refusal_names_every_refused_key_and_its_phase():
    phases = [
        PhaseSpec(name="a", calls=1, env={"FPF_SIM_X": "1", "FPF_KEY": "k"}),
        PhaseSpec(name="b", calls=1, env={"PATH": "/"}),
    ]
    with pytest.raises(SpecEnvRefused) as refused:
        check_spec_env(phases, ["FPF_SIM_*"])
    assert [(r.phase_index, r.key) for r in refused.value.refusals] == [(0, "FPF_KEY"), (1, "PATH")]
    assert "phase 'a': FPF_KEY is not allowed" in str(refused.value)


def test_names_that_are_not_environment_variables_are_invalid_specs():
    for key in ("", "1ABC", "A-B", "A=B", "X" * 129):
        with pytest.raises(ValidationError):
            PhaseSpec(name="p", calls=1, env={key: "x"})


def test_gateway_and_worker_read_the_same_variable_as_a_list_or_comma_separated(monkeypatch):
    monkeypatch.setenv("LIVESTATS_SPEC_ENV_ALLOW", "FPF_SIM_*, FPF_MODEL")
    assert GatewayConfig().spec_env_allow == WorkerConfig().spec_env_allow == ["FPF_SIM_*", "FPF_MODEL"]
    monkeypatch.setenv("LIVESTATS_SPEC_ENV_ALLOW", '["FPF_SIM_*"]')
    assert GatewayConfig().spec_env_allow == WorkerConfig().spec_env_allow == ["FPF_SIM_*"]
    monkeypatch.setenv("LIVESTATS_GATEWAY_SPEC_ENV_ALLOW", "")  # the gateway's own name wins
    assert GatewayConfig().spec_env_allow == []
