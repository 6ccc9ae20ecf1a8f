"""`livestats export` and `livestats replay` against a real server and worker: a run exported,
replayed as a new run and exported again gives the same events but for ids and times."""

from __future__ import annotations

import json

import pytest
from helpers import livestats as run_cli
from helpers import wait_finished
from livestats_shared import keys
from livestats_shared.control import submit_run
from livestats_shared.estimation import EstimationSample
from livestats_shared.history import read_snapshot
from livestats_shared.ids import new_run_id
from livestats_shared.spec import RunSpec
from ws_client import publish_run

FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "5"}
SPEC = RunSpec.model_validate(
    {
        "name": "round trip",
        "backoff_base_s": 0.05,
        "phases": [
            # Every first attempt fails: failures and retries are part of the story.
            {"name": "generate", "calls": 3, "concurrency": 2, "predicted_tokens": 50, "category": "implementation",
             "complexity": "medium", "deliverables": 3, "env": {**FAST, "FPF_SIM_FAIL_FIRST": "1"}},
            # Slow enough that the run outlives a heartbeat interval (0.5 s): heartbeats are exported too.
            {"name": "evaluate", "calls": 2, "predicted_tokens": 30, "category": "testing",
             "env": {"FPF_SIM_LATENCY_MS": "700", "FPF_SIM_JITTER_MS": "5"}},
        ],
    }
)  # fmt: skip
# What a replay may change: ids and times (and the link to the original).
MAPPED = {"id", "run_id", "ts"}


async def livestats(redis_url: str, *argv: str) -> tuple[int, str, str]:
    return await run_cli(redis_url, "unused-queue", *argv)  # export and replay use no queue


def read_export(path) -> tuple[dict, list[dict]]:
    header, *events = (json.loads(line) for line in path.read_text().splitlines())
    return header, events


@pytest.fixture
async def finished_run(redis, publisher, queue_name, start_worker) -> str:
    await start_worker()
    run_id = await submit_run(redis, publisher, SPEC, queue_name=queue_name)
    assert (await wait_finished(redis, run_id, 30)).data["outcome"] == "succeeded"
    return run_id


async def test_export_replay_export_gives_the_same_events_but_for_ids_and_times(
    redis, redis_url, finished_run, tmp_path
):
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    # A run named twice is exported once.
    code, _, err = await livestats(redis_url, "export", finished_run, finished_run, "-o", str(first))
    assert code == 0, err
    header, original = read_export(first)
    assert (header["format"], header["version"], header["runs"]) == ("livestats.export", 1, [finished_run])
    assert [e["seq"] for e in original] == list(range(1, len(original) + 1))
    assert {"call.failed", "call.retrying", "heartbeat"} <= {e["type"] for e in original}

    code, out, err = await livestats(redis_url, "replay", str(first), "--instant", "--json")
    assert code == 0, err
    started = json.loads(out.splitlines()[0])
    new_id = started["run_id"]
    assert started["replay_of"] == finished_run and new_id != finished_run
    await wait_finished(redis, new_id, 10)

    code, _, err = await livestats(redis_url, "export", new_id, "-o", str(second))
    assert code == 0, err
    _, replayed = read_export(second)
    assert len(replayed) == len(original)
    for before, after in zip(original, replayed, strict=True):
        assert after["run_id"] == new_id
        assert {k: v for k, v in after.items() if k not in MAPPED | {"data"}} == {
            k: v for k, v in before.items() if k not in MAPPED | {"data"}
        }
        data = dict(after["data"])
        if after["type"] == "run.queued":
            assert data.pop("replay_of") == finished_run and before["data"]["replay_of"] is None
            data["replay_of"] = None
        if after["type"] == "run.started":  # the deadline is a time: mapped, at the same distance
            assert data["deadline_ts"] - after["ts"] == before["data"]["deadline_ts"] - before["ts"]
            data["deadline_ts"] = before["data"]["deadline_ts"]
        assert data == before["data"], after["type"]

    # The replayed run is a run like any other: indexed, with the same counts and tokens.
    old, new = await read_snapshot(redis, finished_run), await read_snapshot(redis, new_id)
    assert old is not None and new is not None and new.replay_of == finished_run
    same = {"status", "successful_calls", "failed_attempts", "retries", "total_tokens", "predicted_tokens", "phases"}
    assert new.model_dump(include=same) == old.model_dump(include=same)
    assert await redis.zscore(keys.RUNS_INDEX, new_id) is not None


@pytest.mark.cluster
async def test_a_published_run_exported_and_replayed_exports_the_same_events(redis, redis_url, publisher, tmp_path):
    # No worker (a [cluster] variant has no queue): a run published as a producer would.
    run_id = new_run_id()
    await publish_run(publisher, run_id, 301)
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    code, _, err = await livestats(redis_url, "export", run_id, "-o", str(first))
    assert code == 0, err
    _, original = read_export(first)
    assert [e["seq"] for e in original] == list(range(1, 302))

    code, out, err = await livestats(redis_url, "replay", str(first), "--instant", "--json")
    assert code == 0, err
    new_id = json.loads(out.splitlines()[0])["run_id"]
    await wait_finished(redis, new_id, 10)
    code, _, err = await livestats(redis_url, "export", new_id, "-o", str(second))
    assert code == 0, err
    _, replayed = read_export(second)
    keep = {"seq", "type", "v"}
    assert [{k: e[k] for k in keep} for e in replayed] == [{k: e[k] for k in keep} for e in original]
    assert await redis.zscore(keys.RUNS_INDEX, new_id) is not None


async def test_export_estimation_writes_samples_that_report_reads(redis, redis_url, finished_run, tmp_path):
    samples_path = tmp_path / "samples.ndjson"
    code, _, err = await livestats(redis_url, "export", finished_run, "--estimation", "-o", str(samples_path))
    assert code == 0, err
    samples = [EstimationSample.model_validate_json(line) for line in samples_path.read_text().splitlines()]
    snap = await read_snapshot(redis, finished_run)
    assert snap is not None
    # One sample per phase: the plan's prediction (per call x calls) and the phase's reported usage.
    assert [(s.phase_id, s.predicted_tokens, s.actual_tokens, s.success) for s in samples] == [
        (f"{finished_run}/generate", 150, snap.phases[0].actual_tokens, True),
        (f"{finished_run}/evaluate", 60, snap.phases[1].actual_tokens, True),
    ]
    assert sum(s.actual_tokens for s in samples) == snap.total_tokens > 0
    assert (samples[0].category, samples[0].complexity, samples[0].deliverables) == ("implementation", "medium", 3)

    code, out, err = await livestats(redis_url, "report", "--estimation", str(samples_path), "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["count"] == 2


@pytest.mark.slow  # a CLI process per bad file
async def test_a_bad_export_file_is_refused_whole_before_anything_is_published(
    redis, redis_url, finished_run, tmp_path
):
    good = tmp_path / "good.ndjson"
    assert (await livestats(redis_url, "export", finished_run, "-o", str(good)))[0] == 0
    lines = good.read_text().splitlines()
    runs_before = await redis.zcard(keys.RUNS_INDEX)

    broken = tmp_path / "broken.ndjson"
    broken.write_text("\n".join([*lines[:3], '{"v": 1, "type": "call.started"}', *lines[3:]]) + "\n")
    code, _, err = await livestats(redis_url, "replay", str(broken), "--instant")
    assert code == 2 and "line 4: not a livestats event" in err

    headless = tmp_path / "headless.ndjson"
    headless.write_text("\n".join(lines[1:]) + "\n")
    code, _, err = await livestats(redis_url, "replay", str(headless))
    assert code == 2 and "not a livestats.export header" in err

    repeated = tmp_path / "repeated.ndjson"
    repeated.write_text("\n".join([*lines, lines[-1]]) + "\n")
    code, _, err = await livestats(redis_url, "replay", str(repeated))
    assert code == 2 and f"line {len(lines) + 1}: run {finished_run} seq" in err

    header_only = tmp_path / "header-only.ndjson"
    header_only.write_text(lines[0] + "\n")
    code, _, err = await livestats(redis_url, "replay", str(header_only))
    assert code == 2 and "holds no events" in err

    trimmed = tmp_path / "trimmed.ndjson"
    trimmed.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # the stream lost its run.queued
    code, _, err = await livestats(redis_url, "replay", str(trimmed))
    assert code == 2 and "does not start with run.queued" in err
    assert await redis.zcard(keys.RUNS_INDEX) == runs_before


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["export", "no-such-run"], 3, "no run no-such-run"),
        (["export", "Bad:Id"], 2, "invalid run id"),
        (["replay", "/no/such/export.ndjson"], 2, "cannot replay"),
        (["replay", "x.ndjson", "--speed", "0"], 2, "--speed"),
        (["replay", "x.ndjson", "--speed", "2", "--instant"], 2, "not allowed with"),
    ],
)
async def test_export_and_replay_errors_have_documented_exit_codes(redis_url, argv, code, message):
    got, out, err = await livestats(redis_url, *argv)
    assert got == code, (out, err)
    assert message in err


async def test_export_to_a_directory_that_does_not_exist_is_bad_input_not_an_outage(redis_url, finished_run):
    code, _, err = await livestats(redis_url, "export", finished_run, "-o", "/no/such/dir/out.ndjson")
    assert code == 2 and "cannot write" in err


async def test_an_instant_replay_longer_than_the_outbox_waits_for_the_publisher_instead_of_failing(redis, monkeypatch):
    from livestats_cli import replay as replay_module
    from livestats_shared.events import (
        CallStarted,
        CallSucceeded,
        Event,
        EventData,
        Heartbeat,
        Outcome,
        PhasePlan,
        RunFinished,
        RunQueued,
        RunStarted,
    )
    from livestats_shared.history import read_events
    from livestats_shared.publish import Publisher

    calls = 249
    payloads: list[EventData] = [
        RunQueued(name="long", planned_calls=calls, phases=[PhasePlan(name="g", calls=calls)], timeout_s=60)
    ]
    payloads.append(RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0))
    for call in range(calls - 1):
        payloads += [
            CallStarted(phase="g", call=call, attempt=1),
            CallSucceeded(phase="g", call=call, attempt=1, duration_s=0.1, bytes=9),
        ]
    payloads.append(Heartbeat(elapsed_s=1, remaining_s=59, in_flight=0, pids=[]))
    payloads.append(RunFinished(outcome=Outcome.SUCCEEDED, reason="completed"))
    events = [
        Event(type=p.TYPE, run_id="long-original", seq=i, ts=1_000 + i, data=p.model_dump(mode="json"))
        for i, p in enumerate(payloads, start=1)
    ]
    # 500 events through an outbox of 100: without waiting, emit() would raise OutboxFull.
    monkeypatch.setattr(replay_module, "BACKLOG_EVENTS", 50)
    async with Publisher(redis, capacity=100) as publisher:
        new_ids = await replay_module.replay(publisher, {"long-original": events}, speed=None, on_start=lambda *_: None)
    replayed = await read_events(redis, new_ids["long-original"])
    assert [e.seq for e in replayed] == list(range(1, 501))
    assert [e.type for e in replayed] == [e.type for e in events]
