"""The operator owns FPF's environment (docs/processes.md): FPF receives only what the operator
passes plus what the call needs, a spec cannot set an operator's key, and secrets never come
back in excerpts, events or logs."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from pathlib import Path

import pytest
from helpers import wait_finished
from livestats_shared import keys
from livestats_shared.control import submit_run
from livestats_shared.history import read_events
from livestats_shared.spec import PhaseSpec, RunSpec
from proc_util import kill_call_processes

STAND_IN = Path(__file__).with_name("escaping_fpf.py")
SECRET = "sk-live-" + uuid.uuid4().hex  # the operator's upstream key, never to be seen again
CALL_KEYS = {"FPF_RUN_ID", "FPF_PHASE", "FPF_OUTPUT_MODE", "FPF_CALL", "FPF_ATTEMPT", "LIVESTATS_CALL"}


@pytest.fixture
def run_id():
    value = f"env-{uuid.uuid4().hex[:12]}"
    yield value
    kill_call_processes(value)


@pytest.fixture
def operator(monkeypatch):
    """The worker's environment as an operator sets it: FPF's key, the worker's own settings,
    and things of the host that FPF has no business seeing."""
    monkeypatch.setenv("FPF_UPSTREAM_KEY", SECRET)
    monkeypatch.setenv("FPF_MODEL", "model-x")
    monkeypatch.setenv("LIVESTATS_SOME_SETTING", "worker-only")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    monkeypatch.setenv("UNRELATED_HOST_VARIABLE", "host-only")
    monkeypatch.setenv("LC_TIME", "C")


def one_call(behaviour: str, **env: str) -> RunSpec:
    phase = PhaseSpec(name="generate", calls=1, max_attempts=1, env={"FPF_SIM_BEHAVIOUR": behaviour, **env})
    return RunSpec(phases=[phase], backoff_base_s=0)


async def test_fpf_receives_only_the_base_the_operators_keys_and_what_the_call_needs(
    redis, publisher, start_worker, queue_name, tmp_path, run_id, operator
):
    await start_worker(fpf_command=[sys.executable, str(STAND_IN), str(tmp_path), "{prompt_file}"])

    await submit_run(redis, publisher, one_call("env"), run_id=run_id, queue_name=queue_name)
    assert (await wait_finished(redis, run_id, 60)).data["outcome"] == "succeeded"

    seen = json.loads((tmp_path / "env.json").read_text())
    passed = {"PATH", "HOME", "LANG", "TMPDIR"} & set(seen)
    assert {"PATH", "FPF_UPSTREAM_KEY", "FPF_MODEL", "LC_TIME", "FPF_SIM_BEHAVIOUR"} <= set(seen)
    assert set(seen) == passed | {k for k in seen if k.startswith(("FPF_", "LC_"))} | CALL_KEYS
    for key in ("LIVESTATS_SOME_SETTING", "AWS_SECRET_ACCESS_KEY", "UNRELATED_HOST_VARIABLE", "LIVESTATS_REDIS_URL"):
        assert key not in seen
    assert seen["FPF_UPSTREAM_KEY"] == SECRET
    assert seen["FPF_RUN_ID"] == run_id
    assert seen["LIVESTATS_CALL"].split("/")[1:5] == [run_id, "generate", "0", "1"]


async def test_an_operator_lists_what_else_fpf_receives(
    redis, publisher, start_worker, queue_name, tmp_path, run_id, operator
):
    await start_worker(
        fpf_command=[sys.executable, str(STAND_IN), str(tmp_path), "{prompt_file}"], fpf_env=["UNRELATED_*"]
    )

    await submit_run(redis, publisher, one_call("env"), run_id=run_id, queue_name=queue_name)
    await wait_finished(redis, run_id, 60)

    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["UNRELATED_HOST_VARIABLE"] == "host-only"
    assert "FPF_UPSTREAM_KEY" not in seen  # the list replaces the default FPF_*
    assert "PATH" in seen  # the base is always passed


@pytest.mark.parametrize(("behaviour", "reason"), [("leak", "exit_code"), ("leak_stdout", "invalid_json")])
async def test_a_secret_fpf_prints_is_cut_out_of_the_excerpt_events_and_logs(
    redis, publisher, start_worker, queue_name, tmp_path, run_id, operator, caplog, behaviour, reason
):
    caplog.set_level(logging.DEBUG)
    await start_worker(fpf_command=[sys.executable, str(STAND_IN), str(tmp_path), "{prompt_file}"])

    await submit_run(redis, publisher, one_call(behaviour), run_id=run_id, queue_name=queue_name)
    await wait_finished(redis, run_id, 60)

    failed = [e for e in await read_events(redis, run_id) if e.type == "call.failed"]
    assert [e.data["reason"] for e in failed] == [reason]
    assert "[redacted:FPF_UPSTREAM_KEY]" in failed[0].data["excerpt"]  # it was there, and was cut
    raw = await redis.xrange(keys.run_events(run_id))
    assert raw and not any(SECRET.encode() in value for _, fields in raw for value in fields.values())
    stats = await redis.hgetall(keys.run_stats(run_id))
    assert not any(SECRET.encode() in value for value in stats.values())
    assert SECRET not in caplog.text


async def test_the_worker_refuses_a_spec_env_its_operator_does_not_allow(
    redis, publisher, start_worker, queue_name, run_id, operator
):
    # Enqueued as a submitter that skipped the check would: the worker has the last word.
    await start_worker(spec_env_allow=["FPF_SIM_*", "FPF_*"])
    hijack = one_call("exit", FPF_UPSTREAM_KEY="attacker-key")

    await submit_run(redis, publisher, hijack, run_id=run_id, queue_name=queue_name)
    finished = await wait_finished(redis, run_id, 60)

    assert (finished.data["outcome"], finished.data["reason"]) == ("failed", "invalid_spec")
    assert "FPF_UPSTREAM_KEY is set by the operator" in finished.data["detail"]
    assert [e.type for e in await read_events(redis, run_id)] == ["run.queued", "run.finished"]


async def test_the_worker_refuses_a_spec_env_outside_its_allowlist(redis, publisher, start_worker, queue_name, run_id):
    await start_worker(spec_env_allow=[])

    await submit_run(redis, publisher, one_call("exit"), run_id=run_id, queue_name=queue_name)
    finished = await wait_finished(redis, run_id, 60)

    assert (finished.data["outcome"], finished.data["reason"]) == ("failed", "invalid_spec")
    assert "FPF_SIM_BEHAVIOUR is not allowed by the operator" in finished.data["detail"]
