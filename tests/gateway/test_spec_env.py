"""POST /api/runs applies the operator's rule for a spec's `env` (docs/processes.md): 422 naming
each refused key, and nothing recorded."""

from __future__ import annotations

import pytest
from livestats_shared import keys


def body(env: dict[str, str]) -> dict[str, object]:
    return {"phases": [{"name": "generate", "calls": 1, "env": env}]}


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("FPF_UPSTREAM_KEY", "FPF_UPSTREAM_KEY is not allowed by the operator"),
        ("LD_PRELOAD", "LD_PRELOAD is not allowed by the operator"),
        ("FPF_RUN_ID", "set by the worker itself"),
        ("LIVESTATS_CALL", "set by the worker itself"),
        ("LIVESTATS_REDIS_URL", "set by the worker itself"),
    ],
)
async def test_a_spec_setting_a_key_the_operator_owns_is_refused_with_422_naming_it(start_gateway, redis, key, says):
    gateway = start_gateway(spec_env_allow=["FPF_SIM_*"])
    before = await redis.zcard(keys.RUNS_INDEX)
    async with gateway.client() as client:
        answer = await client.post("/api/runs", json=body({"FPF_SIM_LATENCY_MS": "5", key: "x"}))

    assert answer.status_code == 422, answer.text
    messages = [error["msg"] for error in answer.json()["detail"]]
    assert any(says in message and key in message for message in messages), messages
    assert await redis.zcard(keys.RUNS_INDEX) == before


async def test_by_default_a_spec_may_set_no_environment_at_all(start_gateway, redis):
    gateway = start_gateway(spec_env_allow=[])
    async with gateway.client() as client:
        refused = await client.post("/api/runs", json=body({"FPF_SIM_LATENCY_MS": "5"}))
        accepted = await client.post("/api/runs", json=body({}))

    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "phases", 0, "env", "FPF_SIM_LATENCY_MS"]
    assert accepted.status_code == 202, accepted.text


async def test_keys_the_operator_allows_are_accepted(start_gateway):
    gateway = start_gateway(spec_env_allow=["FPF_SIM_*", "FPF_MODEL"])
    async with gateway.client() as client:
        answer = await client.post("/api/runs", json=body({"FPF_SIM_LATENCY_MS": "5", "FPF_MODEL": "m"}))

    assert answer.status_code == 202, answer.text
