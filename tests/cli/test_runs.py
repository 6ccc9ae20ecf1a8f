"""`livestats runs` and `cancel --json`: data for scripts, with the documented exit codes."""

from __future__ import annotations

import json

import pytest
from helpers import livestats
from livestats_shared import keys
from livestats_shared.control import submit_run
from livestats_shared.spec import PhaseSpec, RunSpec


def spec(name: str, *, external: bool = False) -> RunSpec:
    return RunSpec(name=name, external=external, phases=[PhaseSpec(name="generate", calls=2)])


@pytest.mark.slow  # many runs and CLI processes
async def test_runs_lists_the_newest_first_filtered_by_status(redis, redis_url, publisher, queue_name):
    await redis.delete(keys.RUNS_INDEX)  # other tests' runs would crowd the first page
    ids = [await submit_run(redis, publisher, spec(f"r{i}"), queue_name=queue_name) for i in range(3)]
    external = await submit_run(redis, publisher, spec("outside", external=True), queue_name=queue_name)
    await redis.zadd(keys.RUNS_INDEX, {"Not:A:Run": 1})  # an entry added by hand is left out

    code, out, err = await livestats(redis_url, queue_name, "cancel", ids[1], "--json")
    assert code == 0, err
    assert json.loads(out) == {"run_id": ids[1], "status": "cancelled"}

    code, out, err = await livestats(redis_url, queue_name, "runs", "--json", "--limit", "3")
    assert code == 0, err
    listed = json.loads(out)
    assert [r["run_id"] for r in listed] == [external, ids[2], ids[1]]
    assert [r["external"] for r in listed] == [True, False, False]

    code, out, _ = await livestats(redis_url, queue_name, "runs", "--json", "--status", "cancelled")
    assert [r["run_id"] for r in json.loads(out)] == [ids[1]]

    code, out, _ = await livestats(redis_url, queue_name, "runs", "--status", "queued")
    header, *rows = [line.split() for line in out.splitlines()]
    assert header[:2] == ["RUN", "STATUS"]
    assert [row[0] for row in rows] == [external, ids[2], ids[0]]
    assert [row[1] for row in rows] == ["queued"] * 3 and rows[0][-1] == "[external]"


async def test_runs_refuses_a_bad_limit_with_exit_code_2(redis_url, queue_name):
    code, _, err = await livestats(redis_url, queue_name, "runs", "--limit", "0")
    assert code == 2 and "must be at least 1" in err


async def test_the_redis_url_flag_overrides_the_environment(redis_url, queue_name):
    code, out, err = await livestats("redis://127.0.0.1:9/0", queue_name, "runs", "--json", "--redis-url", redis_url)
    assert code == 0, err
    assert isinstance(json.loads(out), list)
    code, _, err = await livestats("redis://127.0.0.1:9/0", queue_name, "runs")
    assert code == 4 and "Redis unavailable" in err


async def test_status_of_a_queued_run_says_why_it_waits(redis, publisher, redis_url, queue_name):
    run_id = await submit_run(redis, publisher, spec("waiting"), queue_name=queue_name)
    code, out, _ = await livestats(redis_url, queue_name, "status", run_id)
    assert code == 0 and "waiting: waiting for a worker: none is running" in out
