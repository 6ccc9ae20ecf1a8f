"""Runs executed end to end by a real arq worker against a real server, with real FPF processes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
from helpers import eventually, wait_finished, wait_for_event, wait_until
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.events import Heartbeat, RunFinished
from livestats_shared.history import read_events, read_snapshot, read_stats_hash
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.stats import PRODUCER_PREFIX, RunSnapshot, fold
from proc_util import pids_with_env
from sentinel_fixtures import on_each_server

FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "10"}


def phase(name: str, calls: int = 1, **kw) -> PhaseSpec:
    env = {**FAST, **kw.pop("env", {})}
    return PhaseSpec(name=name, calls=calls, env=env, **kw)


def assert_consistent(events, stats_hash) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq must be contiguous from 1"
    assert events[0].type == "run.queued" and events[-1].type == "run.finished"
    assert {k: v for k, v in stats_hash.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)
    assert stats_hash.get("in_flight", "0") == "0", "every started attempt must have ended"


async def test_a_run_with_failures_and_retries_is_complete_ordered_and_folds_to_its_stats(
    redis, publisher, start_worker, queue_name
):
    await start_worker()
    spec = RunSpec(
        name="retries",
        retry_budget_ratio=1.0,
        backoff_base_s=0.01,
        phases=[
            phase("generate", 12, concurrency=4, predicted_tokens=300, env={"FPF_SIM_FAIL_FIRST": "1"}),
            phase(
                "evaluate", 8, concurrency=3, env={"FPF_SIM_GARBAGE_RATE": "0.3", "FPF_SIM_SEED": "7"}, max_attempts=5
            ),
        ],
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    finished = await wait_finished(redis, run_id, 60)

    events = await read_events(redis, run_id)
    assert_consistent(events, await read_stats_hash(redis, run_id))
    types = Counter(e.type for e in events)
    assert types["call.started"] == types["call.succeeded"] + types["call.failed"]
    # generate: every call fails its first attempt (exit code), then succeeds.
    retries = [e.payload() for e in events if e.type == "call.retrying"]
    gen_retries = [r for r in retries if r.phase == "generate"]
    assert len(gen_retries) == 12 and {(r.attempt, r.reason.value) for r in gen_retries} == {(2, "exit_code")}
    assert all(r.reason.value == "invalid_json" for r in retries if r.phase == "evaluate")
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and snap.retries == len(retries) and snap.in_flight == 0
    assert snap.predicted_tokens == 12 * 300 and snap.output_tokens > 0
    assert finished.payload().outcome.value == snap.status
    assert snap.status == "succeeded" or (snap.status == "failed" and snap.reason == "calls_given_up")
    assert snap.last_error is None or snap.status == "failed"
    phases = [e.payload().phase for e in events if e.type == "phase.started"]
    assert phases == ["generate", "evaluate"]


async def test_the_retry_budget_stops_a_storm_of_valid_small_json_answers_rejected_by_a_text_minimum(
    redis, publisher, start_worker, queue_name
):
    """The old system's 3 KB minimum rejected valid ~400-byte JSON and retried 2,016 times."""
    await start_worker()
    misconfigured = phase("evaluate", 50, concurrency=4, output="text", min_bytes=3072, max_attempts=10)
    spec = RunSpec(name="storm", phases=[misconfigured], backoff_base_s=0.01)
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    finished = (await wait_finished(redis, run_id, 60)).payload()
    assert (finished.outcome.value, finished.reason) == ("failed", "retry_budget_exhausted")

    events = await read_events(redis, run_id)
    failures = [e.payload() for e in events if e.type == "call.failed" and e.payload().reason.value == "too_small"]
    sizes = [int(f.excerpt.split(" bytes, fewer than the 3072 required")[0]) for f in failures]
    assert sizes and all(340 <= n <= 420 for n in sizes), sizes  # valid ~381-byte JSON answers
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and snap.retries == spec.retry_budget == 10
    assert snap.attempts_started <= spec.retry_budget + 2 * misconfigured.concurrency  # not thousands
    assert_consistent(events, await read_stats_hash(redis, run_id))

    # The same answers in json mode are fine: no minimum size for JSON.
    ok_id = await submit_run(
        redis, publisher, RunSpec(phases=[phase("evaluate", 10, concurrency=4)]), queue_name=queue_name
    )
    assert (await wait_finished(redis, ok_id, 60)).payload().outcome.value == "succeeded"


async def test_a_per_run_timeout_ends_the_run_timed_out_with_no_process_left(
    redis, publisher, start_worker, queue_name
):
    await start_worker()
    spec = RunSpec(
        timeout_s=2,
        phases=[phase("generate", 3, concurrency=3, env={"FPF_SIM_BEHAVIOUR": "hang_with_child"}, call_timeout_s=120)],
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.started", 10)
    assert pids_with_env("FPF_RUN_ID", run_id), "the hanging calls should be running"
    # The calls would hang for 120 s: finishing at all, `run_timeout`, shows the run's 2 s acted.
    finished = (await wait_finished(redis, run_id, 60)).payload()
    assert (finished.outcome.value, finished.reason) == ("timed_out", "run_timeout")
    assert pids_with_env("FPF_RUN_ID", run_id) == []
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and snap.in_flight == 0
    assert_consistent(await read_events(redis, run_id), await read_stats_hash(redis, run_id))


async def test_arqs_job_timeout_is_the_ceiling_and_also_ends_the_run_timed_out(
    redis, publisher, start_worker, queue_name
):
    await start_worker(run_timeout_s=1.5)  # the spec asks for 600 s; the worker allows 1.5 s
    spec = RunSpec(phases=[phase("generate", 2, concurrency=2, env={"FPF_SIM_BEHAVIOUR": "ignore_term"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    finished = (await wait_finished(redis, run_id, 10)).payload()
    assert isinstance(finished, RunFinished) and finished.outcome.value == "timed_out"
    assert finished.elapsed_s is not None and finished.elapsed_s < 600  # the worker's 1.5 s, not the spec's 600
    assert pids_with_env("FPF_RUN_ID", run_id) == []


async def test_a_per_call_timeout_kills_that_calls_process_group(redis, publisher, start_worker, queue_name):
    await start_worker()
    spec = RunSpec(
        phases=[
            phase("generate", 1, env={"FPF_SIM_BEHAVIOUR": "hang_with_child"}, call_timeout_s=0.5, max_attempts=1),
            phase("evaluate", 2),
        ]
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    finished = (await wait_finished(redis, run_id, 20)).payload()
    assert (finished.outcome.value, finished.reason) == ("failed", "calls_given_up")
    failure = next(e.payload() for e in await read_events(redis, run_id) if e.type == "call.failed")
    assert failure.reason.value == "timeout" and failure.final
    assert pids_with_env("FPF_RUN_ID", run_id) == []


@on_each_server
async def test_cancel_kills_the_runs_processes_and_ends_it_cancelled(redis, publisher, start_worker, queue_name):
    await start_worker(heartbeat_interval_s=30)  # the arq abort path, not the heartbeat check
    spec = RunSpec(phases=[phase("generate", 4, concurrency=4, env={"FPF_SIM_BEHAVIOUR": "hang_with_child"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.started", 10, count=4)
    await wait_until(lambda: len(pids_with_env("FPF_RUN_ID", run_id)) >= 8, timeout_s=5)  # 4 calls + their children
    # The cancel writes the end itself (the run is taken from its worker); the worker kills its calls.
    assert await cancel_run(redis, publisher, run_id, reason="stop it") == "cancelled"
    finished = (await wait_finished(redis, run_id, 10)).payload()
    assert (finished.outcome.value, finished.reason, finished.detail) == ("cancelled", "cancel_requested", "stop it")
    await wait_until(lambda: pids_with_env("FPF_RUN_ID", run_id) == [], timeout_s=10)
    events = await read_events(redis, run_id)
    cancelled = [e for e in events if e.type == "call.failed" and e.payload().reason.value == "cancelled"]
    assert len(cancelled) == 4 and all(e.payload().final for e in cancelled)
    assert events[-1].type == "run.finished", "nothing after the end"
    snap = RunSnapshot.from_hash(run_id, await read_stats_hash(redis, run_id))
    assert [(p.state, p.given_up) for p in snap.phases] == [("cancelled", 4)]
    assert snap.in_flight == 0
    assert_consistent(events, await read_stats_hash(redis, run_id))


async def test_a_cancel_request_is_also_seen_by_the_heartbeat(redis, publisher, start_worker, queue_name):
    await start_worker(heartbeat_interval_s=0.2)
    spec = RunSpec(phases=[phase("generate", 2, concurrency=2, env={"FPF_SIM_BEHAVIOUR": "hang"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.started", 10)
    from livestats_shared import keys

    await redis.set(keys.run_cancel(run_id), "flag only")  # no arq abort
    finished = (await wait_finished(redis, run_id, 10)).payload()
    assert (finished.outcome.value, finished.detail) == ("cancelled", "flag only")
    assert pids_with_env("FPF_RUN_ID", run_id) == []


async def test_a_queued_run_cancelled_before_any_worker_takes_it_never_starts(
    redis, publisher, start_worker, queue_name
):
    run_id = await submit_run(redis, publisher, RunSpec(phases=[phase("generate", 2)]), queue_name=queue_name)
    assert await cancel_run(redis, publisher, run_id) == "cancelled"
    await start_worker()

    async def taken_off_the_queue() -> bool:  # arq picked the job, saw the abort and dropped it
        return await redis.zscore(queue_name, run_id) is None

    await eventually(taken_off_the_queue)
    # Its planned phase is closed with it: every phase ends with the run.
    assert [e.type for e in await read_events(redis, run_id)] == ["run.queued", "phase.finished", "run.finished"]
    assert await cancel_run(redis, publisher, run_id) == "cancelled"  # idempotent


@pytest.mark.slow  # outages / many FPF processes
async def test_every_bad_output_is_classified_and_the_worker_keeps_working(redis, publisher, start_worker, queue_name):
    await start_worker(max_output_bytes=1 << 20)
    behaviours = {
        "empty": "empty",
        "binary": "not_utf8",
        "truncated": "invalid_json",
        "huge": "too_large",
        "exit_json": "exit_code",
        "crash": "killed",
        "hang": "timeout",
        "garbage": "invalid_json",
    }
    spec = RunSpec(
        phases=[phase(b, 1, env={"FPF_SIM_BEHAVIOUR": b}, max_attempts=1, call_timeout_s=1.0) for b in behaviours]
        + [phase("non-utf8-text", 1, output="text", env={"FPF_SIM_BEHAVIOUR": "binary"}, max_attempts=1)]
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    finished = (await wait_finished(redis, run_id, 60)).payload()
    assert (finished.outcome.value, finished.reason) == ("failed", "calls_given_up")
    events = await read_events(redis, run_id)
    reasons = {e.payload().phase: e.payload().reason.value for e in events if e.type == "call.failed"}
    assert reasons == {**behaviours, "non-utf8-text": "not_utf8"}
    assert all(len(e.payload().excerpt) <= 200 for e in events if e.type == "call.failed")
    assert_consistent(events, await read_stats_hash(redis, run_id))
    # Same worker, next run: fine.
    ok_id = await submit_run(redis, publisher, RunSpec(phases=[phase("generate", 3)]), queue_name=queue_name)
    assert (await wait_finished(redis, ok_id, 30)).payload().outcome.value == "succeeded"


async def test_a_missing_fpf_command_fails_the_run_fast_with_spawn_error(redis, publisher, start_worker, queue_name):
    await start_worker(fpf_command=["/nonexistent/fpf", "{prompt_file}"])
    run_id = await submit_run(
        redis, publisher, RunSpec(phases=[phase("generate", 20, concurrency=2)]), queue_name=queue_name
    )
    finished = (await wait_finished(redis, run_id, 20)).payload()
    assert (finished.outcome.value, finished.reason) == ("failed", "spawn_error")
    snap = await read_snapshot(redis, run_id)
    assert snap is not None and snap.attempts_started <= 2


@pytest.mark.slow  # outages / many FPF processes
async def test_the_server_stopped_and_restarted_mid_run_loses_no_event(
    redis_server, redis, publisher, start_worker, queue_name
):
    server = redis_server.require_control()
    await start_worker()
    spec = RunSpec(phases=[phase("generate", 40, concurrency=4, env={"FPF_SIM_LATENCY_MS": "100"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.succeeded", 10, count=6)
    running = set(pids_with_env("FPF_RUN_ID", run_id))
    await asyncio.to_thread(server.stop)
    # Calls keep running and their events wait in the outbox: wait until 4 more have started.
    seen: set[int] = set()

    def calls_started_while_down() -> bool:
        seen.update(pids_with_env("FPF_RUN_ID", run_id))
        return len(seen - running) >= 4

    await wait_until(calls_started_while_down, timeout_s=30, interval_s=0.02)
    server.start()  # from this thread: the server dies with the thread that started it
    finished = (await wait_finished(redis, run_id, 60)).payload()
    assert finished.outcome.value == "succeeded"
    events = await read_events(redis, run_id)
    assert_consistent(events, await read_stats_hash(redis, run_id))
    assert sum(e.type == "call.succeeded" for e in events) == 40


async def test_heartbeats_carry_elapsed_remaining_and_child_pids_from_one_clock(
    redis, publisher, start_worker, queue_name
):
    await start_worker(heartbeat_interval_s=0.25)
    spec = RunSpec(timeout_s=30, phases=[phase("generate", 2, concurrency=2, env={"FPF_SIM_LATENCY_MS": "1500"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_finished(redis, run_id, 20)
    beats = [b for e in await read_events(redis, run_id) if isinstance(b := e.payload(), Heartbeat)]
    assert len(beats) >= 4
    for b in beats:
        assert abs(b.elapsed_s + b.remaining_s - 30) < 0.01  # same clock: they always add up
    assert any(b.in_flight == 2 and len(b.pids) == 2 for b in beats)
    # The n-th beat is due n x 0.25 s after the start (fixed ticks): never earlier; a busy machine
    # can only make it later, so there is no upper bound to assert.
    for n, b in enumerate(beats, start=1):
        assert b.elapsed_s >= n * 0.25 - 0.01, (n, b.elapsed_s)


async def test_a_job_with_an_invalid_spec_ends_its_run_failed_instead_of_queued_forever(
    redis, publisher, start_worker, queue_name
):
    from arq.connections import ArqRedis
    from livestats_shared import keys
    from livestats_shared.events import PhasePlan, RunQueued
    from livestats_shared.ids import new_run_id

    await start_worker()
    run_id = new_run_id()
    await publisher.publish(
        run_id, RunQueued(name="bad", planned_calls=1, phases=[PhasePlan(name="g", calls=1)], timeout_s=5)
    )
    arq = ArqRedis(connection_pool=redis.connection_pool)
    await arq.enqueue_job(keys.RUN_JOB, run_id, '{"phases": "not a list"}', _job_id=run_id, _queue_name=queue_name)
    finished = (await wait_finished(redis, run_id, 10)).payload()
    assert (finished.outcome.value, finished.reason) == ("failed", "invalid_spec")
    assert "phases" in finished.detail


@pytest.mark.slow  # outages / many FPF processes
async def test_a_long_redis_outage_neither_kills_the_worker_nor_loses_the_runs_events(
    redis_server, redis, publisher, start_worker, queue_name, caplog
):
    """Longer than the client's own retries: arq's poll loop would end the worker without ours."""
    server = redis_server.require_control()
    await start_worker()
    spec = RunSpec(phases=[phase("generate", 30, concurrency=3, env={"FPF_SIM_LATENCY_MS": "300"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.succeeded", 10, count=3)
    caplog.set_level(logging.WARNING, logger="livestats.worker")
    await asyncio.to_thread(server.stop)
    # Until the client's own retries are spent, the poll loop sees nothing; then it logs this.
    await wait_until(lambda: any("Redis unavailable" in r.getMessage() for r in caplog.records), timeout_s=60)
    server.start()  # from this thread: the server dies with the thread that started it
    assert (await wait_finished(redis, run_id, 60)).payload().outcome.value == "succeeded"
    assert_consistent(await read_events(redis, run_id), await read_stats_hash(redis, run_id))
    # The same worker still takes new runs.
    again = await submit_run(redis, publisher, RunSpec(phases=[phase("generate", 2)]), queue_name=queue_name)
    assert (await wait_finished(redis, again, 30)).payload().outcome.value == "succeeded"


async def test_the_heartbeat_task_always_stops_when_cancelled(redis, publisher, redis_url):
    """A cancel landing just as a Redis command completes must not be lost (asyncio.wait_for on
    3.11 loses it, in our code or inside redis-py, and the run then never finishes)."""
    import random

    from livestats_worker.config import WorkerConfig
    from livestats_worker.run import RunExecution

    config = WorkerConfig(redis_url=redis_url, heartbeat_interval_s=0.0005)
    execution = RunExecution(config, redis, publisher, "hb-test", RunSpec(phases=[phase("g")]))
    for _ in range(300):
        task = asyncio.create_task(execution._heartbeats())
        await asyncio.sleep(random.uniform(0, 0.003))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, "the heartbeat task ignored its cancellation"


async def test_a_prompt_full_of_literal_braces_is_sent_as_written(redis, publisher, start_worker, queue_name):
    await start_worker()
    prompt = 'Answer as {"score": <int>, "why": "..."} for item {call} of {phase}; keep {braces} and }{.'
    spec = RunSpec(phases=[phase("evaluate", 2, prompt=prompt)])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    assert (await wait_finished(redis, run_id, 20)).payload().outcome.value == "succeeded"


def test_only_the_documented_placeholders_are_substituted():
    from livestats_worker.calls import render_prompt

    rendered = render_prompt('{"a": {call}} {phase} {other} {run_id}', phase="gen", call=3, run_id="r1")
    assert rendered == '{"a": 3} gen {other} r1'
