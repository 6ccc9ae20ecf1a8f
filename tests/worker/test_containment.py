"""No process outlives its call (docs/processes.md): a stand-in FPF starts a `setsid` child, a
double-fork daemon and a process-group escape, and each way a call or a worker ends leaves
exactly the survivors the document promises, counted by scanning /proc."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
from helpers import wait_finished, wait_for_event, wait_until
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.history import read_events
from livestats_shared.spec import PhaseSpec, RunSpec
from proc_util import call_markers, kill_call_processes

STAND_IN = Path(__file__).with_name("escaping_fpf.py")
KINDS = ("setsid", "daemon", "pgroup")


@pytest.fixture
def run_id():
    value = f"contain-{uuid.uuid4().hex[:12]}"
    yield value
    kill_call_processes(value)


@pytest.fixture
def pid_dir(tmp_path):
    path = tmp_path / "pids"
    path.mkdir()
    return path


def command(pid_dir: Path) -> list[str]:
    return [sys.executable, str(STAND_IN), str(pid_dir), "{prompt_file}"]


def spec(behaviour: str, **phase: object) -> RunSpec:
    settings = {"name": "generate", "calls": 1, "max_attempts": 1, "env": {"FPF_SIM_BEHAVIOUR": behaviour}, **phase}
    return RunSpec(phases=[PhaseSpec(**settings)], backoff_base_s=0)  # type: ignore[arg-type]


def escapees(pid_dir: Path) -> dict[str, int]:
    """The helpers' pids, by kind, once all three have written them."""
    files = {kind: pid_dir / f"{kind}.pid" for kind in KINDS}
    return {kind: int(path.read_text()) for kind, path in files.items() if path.exists()}


async def escaped(pid_dir: Path, run_id: str) -> dict[str, int]:
    """Wait until the three helpers run and carry the run's marker (the positive control: the
    same scan that later finds no survivor sees them now)."""
    await wait_until(
        lambda: len(escapees(pid_dir)) == 3 and set(escapees(pid_dir).values()) <= set(call_markers(run_id)), 30
    )
    return escapees(pid_dir)


def survivors(run_id: str, pids: dict[str, int]) -> dict[str, int]:
    """The helpers still alive with this run's marker (a recycled pid would lack it)."""
    marked = call_markers(run_id)
    return {kind: pid for kind, pid in pids.items() if pid in marked}


async def test_a_clean_end_leaves_no_helper_running(redis, publisher, start_worker, queue_name, pid_dir, run_id):
    await start_worker(fpf_command=command(pid_dir))

    await submit_run(redis, publisher, spec("exit"), run_id=run_id, queue_name=queue_name)
    finished = await wait_finished(redis, run_id, 60)

    assert finished.data["outcome"] == "succeeded"
    pids = escapees(pid_dir)
    assert set(pids) == set(KINDS)  # all three were started before the answer
    assert survivors(run_id, pids) == {}
    assert call_markers(run_id) == {}


async def test_a_call_timeout_leaves_no_helper_running(redis, publisher, start_worker, queue_name, pid_dir, run_id):
    await start_worker(fpf_command=command(pid_dir))

    await submit_run(redis, publisher, spec("hang", call_timeout_s=8), run_id=run_id, queue_name=queue_name)
    pids = await escaped(pid_dir, run_id)
    failed = await wait_for_event(redis, run_id, "call.failed", 60)

    assert failed.data["reason"] == "timeout"
    await wait_finished(redis, run_id, 30)
    assert survivors(run_id, pids) == {}
    assert call_markers(run_id) == {}


async def test_cancel_leaves_no_helper_running_and_says_killed_once_verified(
    redis, publisher, start_worker, queue_name, pid_dir, run_id
):
    await start_worker(fpf_command=command(pid_dir))
    await submit_run(redis, publisher, spec("hang"), run_id=run_id, queue_name=queue_name)
    pids = await escaped(pid_dir, run_id)

    await cancel_run(redis, publisher, run_id)
    finished = await wait_finished(redis, run_id, 30)

    assert finished.data["outcome"] == "cancelled"
    # The cancel writes the end itself (issue 14's gate: a paused worker cannot delay it) and says
    # only what it knows: the worker is told to kill; the worker then kills, and verifies.
    await wait_until(lambda: survivors(run_id, pids) == {}, 30)
    failed = [e for e in await read_events(redis, run_id) if e.type == "call.failed"]
    assert [e.data["reason"] for e in failed] == ["cancelled"]
    assert "its worker is told to kill this call's processes" in failed[0].data["excerpt"]


async def test_worker_sigterm_leaves_no_helper_running(
    redis, publisher, start_worker_process, queue_name, pid_dir, run_id
):
    proc, _ = await start_worker_process(fpf_command=json.dumps(command(pid_dir)), shutdown_grace_s="0")
    await submit_run(redis, publisher, spec("hang"), run_id=run_id, queue_name=queue_name)
    pids = await escaped(pid_dir, run_id)

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0

    assert survivors(run_id, pids) == {}
    assert call_markers(run_id) == {}


def reaper_of(worker_pid: int) -> int:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if ppid == worker_pid and b"livestats_worker.reaper" in cmdline:
            return int(name)
    raise AssertionError(f"worker {worker_pid} has no reaper process")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


async def test_worker_sigkill_leaves_no_helper_running_once_its_reaper_has_swept(
    redis, publisher, start_worker_process, queue_name, pid_dir, run_id
):
    proc, _ = await start_worker_process(fpf_command=json.dumps(command(pid_dir)))
    await submit_run(redis, publisher, spec("hang"), run_id=run_id, queue_name=queue_name)
    pids = await escaped(pid_dir, run_id)
    reaper = reaper_of(proc.pid)

    proc.kill()  # no code of the worker runs after this
    await proc.wait()

    await wait_until(lambda: call_markers(run_id) == {}, 30)
    assert survivors(run_id, pids) == {}
    await wait_until(lambda: gone(reaper), 30)  # its one job done, the reaper exits


async def test_worker_and_reaper_sigkilled_leave_the_helpers_until_the_next_worker_starts(
    redis, publisher, start_worker_process, queue_name, pid_dir, run_id
):
    proc, _ = await start_worker_process(fpf_command=json.dumps(command(pid_dir)))
    await submit_run(redis, publisher, spec("hang"), run_id=run_id, queue_name=queue_name)
    pids = await escaped(pid_dir, run_id)
    leader = next(pid for pid in call_markers(run_id) if pid not in pids.values())
    os.kill(reaper_of(proc.pid), signal.SIGKILL)
    proc.kill()
    await proc.wait()

    # The documented limit: what left the call's group runs on, with nobody left to kill it ...
    # (checked at once: any worker starting on this host, another test suite's too, sweeps them)
    assert survivors(run_id, pids) == pids
    # ... while the call's own process dies with the worker (PR_SET_PDEATHSIG) ...
    await wait_until(lambda: gone(leader), 30)

    # ... until a worker starts on this host and sweeps what dead workers left.
    successor, _ = await start_worker_process()
    await wait_until(lambda: call_markers(run_id) == {}, 30)
    # Another worker starting on this host (a parallel test's) may have swept them first: stop
    # the successor only once it handles SIGTERM, or it would die of the signal mid-import.
    await wait_until(lambda: _catches_sigterm(successor.pid), 30)
    successor.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(successor.wait(), 30) == 0


def _catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (its SigCgt mask in /proc): asyncio's, set by the
    worker before it starts serving."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))
