"""`livestats tail RUN` against a live run: counters rise, each phase has its bar, the last
events are shown, and a dropped connection is resumed without losing or doubling an event."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys

from helpers import TAIL_COUNTERS, wait_for_event
from livestats_shared.control import submit_run
from livestats_shared.spec import PhaseSpec, RunSpec

SLOW = {"FPF_SIM_LATENCY_MS": "120", "FPF_SIM_JITTER_MS": "10"}
COUNTERS = TAIL_COUNTERS


def two_phases(calls: int = 5) -> RunSpec:
    return RunSpec(
        name="tailed",
        phases=[PhaseSpec(name=n, calls=calls, concurrency=1, env=SLOW) for n in ("generate", "evaluate")],
    )


async def tail(redis_url: str, *argv: str, stdout=asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    env = {**os.environ, "LIVESTATS_REDIS_URL": redis_url}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestats_cli", "tail", *argv,
        env=env, stdout=stdout, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(proc: asyncio.subprocess.Process, timeout_s: float = 60) -> tuple[int, str, str]:
    async with asyncio.timeout(timeout_s):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, (out or b"").decode(), err.decode()


async def started_tail(redis_url: str, run_id: str, start_worker) -> tuple[asyncio.subprocess.Process, bytes]:
    """Tail a queued run, and start the worker only once tail shows it: however slow the
    machine, tail sees the run from before its first call."""
    proc = await tail(redis_url, run_id, "--interval", "0.05")
    async with asyncio.timeout(30):
        first = await proc.stdout.readline()
    await start_worker()
    return proc, first


async def test_tail_of_a_live_run_shows_rising_counters_and_ends_with_its_outcome(
    redis, redis_url, publisher, queue_name, start_worker
):
    run_id = await submit_run(redis, publisher, two_phases(), queue_name=queue_name)
    proc, first = await started_tail(redis_url, run_id, start_worker)
    code, out, err = await finish(proc)
    out = first.decode() + out
    assert code == 0, err

    done = [int(m.group(1)) for m in COUNTERS.finditer(out)]
    assert done == sorted(done), "counters never go back"
    assert len(set(done)) >= 4 and done[-1] == 10, out  # seen rising while the run ran, not only at the end
    assert all(m.group(2) == "10" for m in COUNTERS.finditer(out))
    lines = out.splitlines()
    assert any(" call.succeeded evaluate#4" in line for line in lines)
    assert re.search(r"#\d+ run\.finished succeeded", out)
    assert f"run {run_id} 'tailed': succeeded" in lines[-3]  # a plain summary closes the log
    assert re.search(r"generate +\[#{24}\] 5/5", lines[-2]) and re.search(r"evaluate +\[#{24}\] 5/5", lines[-1])


async def test_tail_resumes_after_its_connection_is_dropped(redis, redis_url, publisher, queue_name, start_worker):
    run_id = await submit_run(redis, publisher, two_phases(4), queue_name=queue_name)
    proc, first = await started_tail(redis_url, run_id, start_worker)
    await wait_for_event(redis, run_id, "call.succeeded", count=2)
    killed = 0
    for client in await redis.client_list():
        if client["name"] == "livestats.cli":
            killed += await redis.client_kill_filter(_id=client["id"])
    assert killed >= 1
    code, out, err = await finish(proc)
    out = first.decode() + out
    assert code == 0, err
    assert "connection lost" in out and "resumed after" in out
    seqs = [int(s) for s in re.findall(r"^\d\d:\d\d:\d\d\.\d{3} #(\d+) ", out, re.M)]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "every event once, in order, across the reconnect"
    assert COUNTERS.findall(out)[-1][:2] == ("8", "8")


async def test_tail_on_a_terminal_redraws_the_view_in_place(redis, redis_url, publisher, queue_name, start_worker):
    run_id = await submit_run(redis, publisher, two_phases(3), queue_name=queue_name)
    controller, terminal = pty.openpty()
    try:
        proc = await tail(redis_url, run_id, stdout=terminal)
        os.close(terminal)
        terminal = -1
        chunks = [await asyncio.to_thread(os.read, controller, 65536)]  # the first frame: the run is queued
        await start_worker()
        code, _, err = await finish(proc)
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    screen = b"".join(chunks).decode()
    assert code == 0, err
    assert re.search(r"\x1b\[\d+F\x1b\[J", screen), "later frames move the cursor back over the view"
    last_frame = screen.rsplit("\x1b[J", 1)[-1]
    assert f"run {run_id} 'tailed': succeeded" in last_frame
    assert re.search(r"generate +\[#{24}\] 3/3", last_frame) and re.search(r"evaluate +\[#{24}\] 3/3", last_frame)


async def test_tail_of_an_unknown_run_exits_3(redis_url):
    code, _, err = await finish(await tail(redis_url, "no-such-run"))
    assert code == 3 and "no run no-such-run" in err
