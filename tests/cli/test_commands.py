"""The `livestats` subcommands against a real server and worker, with the documented exit codes."""

from __future__ import annotations

import json

import pytest
from helpers import livestats, wait_finished, wait_for_event
from livestats_shared import keys

FAST_SPEC = {"name": "cli", "phases": [{"name": "generate", "calls": 3, "env": {"FPF_SIM_LATENCY_MS": "20"}}]}
HANGING_SPEC = {"name": "hang", "phases": [{"name": "generate", "calls": 2, "env": {"FPF_SIM_BEHAVIOUR": "hang"}}]}


async def test_submit_wait_status_and_events_tell_the_same_story(redis, redis_url, queue_name, start_worker):
    await start_worker()
    code, out, err = await livestats(
        redis_url, queue_name, "submit", "-", "--wait", "--json", stdin=json.dumps(FAST_SPEC)
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    run_id = json.loads(lines[0])["run_id"]
    final = json.loads(lines[-1])
    assert (final["status"], final["successful_calls"], final["in_flight"]) == ("succeeded", 3, 0)

    code, out, _ = await livestats(redis_url, queue_name, "status", run_id, "--json")
    assert code == 0 and json.loads(out)["successful_calls"] == 3

    code, out, _ = await livestats(redis_url, queue_name, "events", run_id)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run.finished" and events[-1]["data"]["outcome"] == "succeeded"
    assert all(set(e) == {"v", "type", "run_id", "seq", "ts", "data", "id"} for e in events)

    code, out, _ = await livestats(redis_url, queue_name, "events", run_id, "--after", events[-2]["id"])
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [events[-1]["seq"]]


async def test_cancel_from_the_command_line_stops_a_running_run(redis, redis_url, queue_name, start_worker):
    await start_worker()
    code, out, err = await livestats(redis_url, queue_name, "submit", "-", "--json", stdin=json.dumps(HANGING_SPEC))
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    await wait_for_event(redis, run_id, "call.started", 30)  # running, not queued
    code, out, _ = await livestats(redis_url, queue_name, "cancel", run_id, "--reason", "enough")
    assert (code, out.strip()) == (0, "cancelled")  # the cancel writes the end itself
    finished = (await wait_finished(redis, run_id, 15)).payload()
    assert (finished.outcome.value, finished.detail) == ("cancelled", "enough")


async def test_a_failed_run_gives_exit_code_1_with_wait(redis_url, queue_name, start_worker):
    await start_worker()
    spec = {"phases": [{"name": "g", "calls": 1, "max_attempts": 1, "env": {"FPF_SIM_BEHAVIOUR": "fail"}}]}
    code, _, _ = await livestats(redis_url, queue_name, "submit", "-", "--wait", stdin=json.dumps(spec))
    assert code == 1


@pytest.mark.parametrize(
    ("argv", "stdin", "code", "message"),
    [
        (["status", "a:b"], None, 2, "invalid run id"),
        (["status", "no-such-run"], None, 3, "no run no-such-run"),
        (["cancel", "no-such-run"], None, 3, "no run"),
        (["events", "{x}"], None, 2, "invalid run id"),
        (["submit", "-"], '{"phases": []}', 2, "phases"),
        (["submit", "-"], '{"phases": [{"name": "g", "calls": 1, "env": {"LD_PRELOAD": "x"}}]}', 2, "FPF_"),
        (["submit", "-"], "not json", 2, "Invalid JSON"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_a_documented_exit_code(
    redis_url, queue_name, argv, stdin, code, message
):
    got, out, err = await livestats(redis_url, queue_name, *argv, stdin=stdin)
    assert got == code, (out, err)
    assert message in err


async def test_an_unreachable_redis_gives_exit_code_4(queue_name):
    code, _, err = await livestats("redis://127.0.0.1:9/0", queue_name, "status", "some-run")
    assert code == 4 and "Redis unavailable" in err


async def test_a_malformed_stream_entry_is_reported_and_skipped_not_fatal(redis, redis_url, queue_name, start_worker):
    from livestats_shared import keys

    await start_worker()
    code, out, _ = await livestats(
        redis_url, queue_name, "submit", "-", "--wait", "--json", stdin=json.dumps(FAST_SPEC)
    )
    run_id = json.loads(out.splitlines()[0])["run_id"]
    await redis.xadd(keys.run_events(run_id), {"type": "bogus", "note": "added by hand"})
    await redis.xadd(
        keys.run_events(run_id), {"v": 1, "type": "call.failed", "run_id": run_id, "seq": 99, "ts": 1, "data": "{}"}
    )
    code, out, err = await livestats(redis_url, queue_name, "events", run_id)
    assert code == 0, err
    assert [json.loads(line)["type"] for line in out.splitlines()][-1] == "run.finished"
    assert err.count("skipped a malformed stream entry") == 2
    assert "invalid call.failed payload" in err


async def test_submit_refuses_a_spec_env_the_operator_does_not_allow(redis, redis_url, queue_name):
    # The suite's operator allows FPF_SIM_* only (tests/conftest.py), as the gateway would.
    spec = {"phases": [{"name": "generate", "calls": 1, "env": {"FPF_UPSTREAM_KEY": "mine"}}]}
    before = await redis.zcard(keys.RUNS_INDEX)
    code, _, err = await livestats(redis_url, queue_name, "submit", "-", stdin=json.dumps(spec))
    assert code == 2, err
    assert "FPF_UPSTREAM_KEY is not allowed by the operator" in err
    assert await redis.zcard(keys.RUNS_INDEX) == before
