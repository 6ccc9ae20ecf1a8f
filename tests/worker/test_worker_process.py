"""The worker as a process: SIGTERM shuts down in phases and leaves nothing running."""

from __future__ import annotations

import asyncio
import signal

import pytest
from helpers import wait_finished, wait_for_event, wait_until
from livestats_shared.control import submit_run
from livestats_shared.spec import PhaseSpec, RunSpec
from proc_util import pids_with_env

pytestmark = pytest.mark.slow  # worker processes started and signalled


async def test_sigterm_cancels_running_runs_kills_their_calls_and_exits_cleanly(
    redis, publisher, start_worker_process, queue_name
):
    proc, marker = await start_worker_process(shutdown_grace_s="0")
    spec = RunSpec(
        phases=[PhaseSpec(name="generate", calls=3, concurrency=3, env={"FPF_SIM_BEHAVIOUR": "hang_with_child"})]
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.started", 20, count=3)
    # the worker, and 3 calls that each start a child of their own
    await wait_until(lambda: len(pids_with_env("LS_TEST_MARKER", marker)) >= 1 + 3 * 2, timeout_s=5)

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    finished = (await wait_finished(redis, run_id, 5)).payload()
    assert (finished.outcome.value, finished.reason) == ("cancelled", "worker_shutdown")
    assert pids_with_env("LS_TEST_MARKER", marker) == []


async def test_sigterm_lets_a_short_run_finish_within_the_grace_period(
    redis, publisher, start_worker_process, queue_name
):
    proc, marker = await start_worker_process(shutdown_grace_s="20")
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=2, concurrency=2, env={"FPF_SIM_LATENCY_MS": "1500"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.started", 20)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert (await wait_finished(redis, run_id, 5)).payload().outcome.value == "succeeded"
    assert pids_with_env("LS_TEST_MARKER", marker) == []


async def test_a_worker_killed_with_sigkill_takes_its_fpf_calls_with_it(
    redis, publisher, start_worker_process, queue_name
):
    proc, _ = await start_worker_process()
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=3, concurrency=3, env={"FPF_SIM_BEHAVIOUR": "hang"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    await wait_for_event(redis, run_id, "call.started", 20, count=3)
    await wait_until(lambda: len(pids_with_env("FPF_RUN_ID", run_id)) == 3, timeout_s=5)
    proc.kill()  # no cleanup code runs in the worker
    await proc.wait()
    await wait_until(lambda: pids_with_env("FPF_RUN_ID", run_id) == [], timeout_s=5)
