"""A worker paused past the stall window (SIGSTOP, a VM freeze) and then resumed: the run stays
ended as the gateway marked it, the worker writes nothing more, starts no call and kills its
calls' processes. Real worker processes, a real gateway (its stall monitor), real FPF processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import wait_finished, wait_for_event, wait_until
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_shared.stats import PRODUCER_PREFIX, RunSnapshot, fold
from proc_util import kill_all_with_env, pids_with_env


@pytest.fixture
def logged_fpf(tmp_path: Path) -> tuple[list[str], Path]:
    """An FPF command that notes each start (wall-clock ns, call, attempt) and then runs the
    simulator: the proof of when processes were started, whatever their fate."""
    log = tmp_path / "starts.log"
    script = tmp_path / "fpf.sh"
    script.write_text(
        f'#!/bin/sh\necho "$(date +%s%N) $FPF_CALL $FPF_ATTEMPT" >> {log}\nexec {sys.executable} -m livestats_fpfsim "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return [str(script)], log


async def start_worker(redis_url: str, queue_name: str, fpf_command: list[str]) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "LIVESTATS_REDIS_URL": redis_url,
        "LIVESTATS_QUEUE_NAME": queue_name,
        "LIVESTATS_HEARTBEAT_INTERVAL_S": "0.5",
        "LIVESTATS_KILL_GRACE_S": "0.5",
        "LIVESTATS_FPF_COMMAND": json.dumps(fpf_command),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestats_worker", env=env, stderr=asyncio.subprocess.PIPE
    )


async def wait_for_log(proc: asyncio.subprocess.Process, needle: str, timeout_s: float) -> str:
    assert proc.stderr is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await proc.stderr.readline()).decode(errors="replace")
            assert line, f"worker exited before logging {needle!r}"
            if needle in line:
                return line


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.communicate()


async def assert_ended_once_and_consistent(redis, run_id: str, outcome: str) -> RunSnapshot:
    events = await read_events(redis, run_id)
    ends = [e for e in events if e.type == "run.finished"]
    assert [e.data["outcome"] for e in ends] == [outcome], "exactly one run.finished"
    assert events[-1].type == "run.finished", "no event after it"
    h = {k: v for k, v in (await read_stats_hash(redis, run_id)).items() if not k.startswith(PRODUCER_PREFIX)}
    assert h == fold(events), "snapshot == fold"
    snap = RunSnapshot.from_hash(run_id, h)
    assert snap.in_flight == 0 and all(p.state == outcome for p in snap.phases)
    return snap


async def test_a_worker_paused_past_the_stall_window_stays_stalled_starts_nothing_and_kills_its_calls(
    redis, redis_url, publisher, start_gateway, queue_name, logged_fpf
):
    fpf, starts = logged_fpf
    start_gateway(stall_margin_s=0.5)
    proc = await start_worker(redis_url, queue_name, fpf)
    run_id = f"paused-{uuid.uuid4().hex[:12]}"
    # Calls short enough to end during the pause: on SIGCONT, each lane would start its next one.
    sim = {"FPF_SIM_LATENCY_MS": "300", "FPF_SIM_JITTER_MS": "50"}
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=200, concurrency=3, env=sim)], timeout_s=300)
    try:
        await submit_run(redis, publisher, spec, run_id=run_id, queue_name=queue_name)
        await wait_for_event(redis, run_id, "call.succeeded", 30, count=3)
        proc.send_signal(signal.SIGSTOP)
        mark = await wait_finished(redis, run_id, 30)
        assert (mark.data["outcome"], mark.data["reason"]) == ("stalled", "heartbeats_stopped")

        resumed = time.monotonic()
        print("SIGCONT at", time.time_ns(), "mark", mark.ts)
        proc.send_signal(signal.SIGCONT)
        print(await wait_for_log(proc, "fenced out", 30))
        await wait_until(lambda: pids_with_env("FPF_RUN_ID", run_id) == [], timeout_s=30)
        print(f"FPF processes of the run gone {time.monotonic() - resumed:.2f} s after SIGCONT")

        late = [line for line in starts.read_text().splitlines() if int(line.split()[0]) // 1_000_000 > mark.ts]
        assert late == [], "no FPF process starts after the stall mark"
        await assert_ended_once_and_consistent(redis, run_id, "stalled")
    finally:
        await stop(proc)
        kill_all_with_env("FPF_RUN_ID", run_id)


async def test_cancelling_a_stalled_run_keeps_it_stalled_and_the_resumed_workers_processes_die(
    redis, redis_url, publisher, start_gateway, queue_name, logged_fpf
):
    fpf, _ = logged_fpf
    start_gateway(stall_margin_s=0.5)
    proc = await start_worker(redis_url, queue_name, fpf)
    run_id = f"stalled-{uuid.uuid4().hex[:12]}"
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=4, concurrency=2, env={"FPF_SIM_BEHAVIOUR": "hang"})])
    try:
        await submit_run(redis, publisher, spec, run_id=run_id, queue_name=queue_name)
        await wait_for_event(redis, run_id, "call.started", 30, count=2)
        await wait_until(lambda: len(pids_with_env("FPF_RUN_ID", run_id)) >= 2, timeout_s=30)
        proc.send_signal(signal.SIGSTOP)
        await wait_finished(redis, run_id, 30)

        assert await cancel_run(redis, publisher, run_id, reason="too late") == "stalled", "a final status stays"
        assert len(pids_with_env("FPF_RUN_ID", run_id)) >= 2, "the hanging calls outlived the pause"
        proc.send_signal(signal.SIGCONT)
        await wait_until(lambda: pids_with_env("FPF_RUN_ID", run_id) == [], timeout_s=30)
        snap = await assert_ended_once_and_consistent(redis, run_id, "stalled")
        assert (snap.status, snap.outcome) == ("stalled", "stalled")
    finally:
        await stop(proc)
        kill_all_with_env("FPF_RUN_ID", run_id)
