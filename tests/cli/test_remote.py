"""The commands through the gateway (`--gateway` / LIVESTATS_GATEWAY_URL and a token) instead
of Redis: Redis is deliberately unreachable from the CLI in these tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import Any

import pytest
from helpers import TAIL_COUNTERS as COUNTERS
from helpers import wait_for_event

SLOW = {"FPF_SIM_LATENCY_MS": "120", "FPF_SIM_JITTER_MS": "10"}
SPEC: dict[str, Any] = {
    "name": "remote",
    "phases": [{"name": n, "calls": 4, "concurrency": 1, "env": SLOW} for n in ("a", "b")],
}


async def cli(gateway, *argv: str, token: str | None = None, stdin: str | None = None) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "LIVESTATS_REDIS_URL": "redis://127.0.0.1:9/0",  # nothing listens: only the gateway can answer
        "LIVESTATS_GATEWAY_URL": gateway.http,
        "LIVESTATS_TOKEN": token or gateway.token,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestats_cli", *argv,
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def done(proc: asyncio.subprocess.Process, stdin: str | None = None) -> tuple[int, str, str]:
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin.encode() if stdin else None)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow  # CLI processes through a gateway, with a restart
async def test_submit_wait_runs_and_cancel_through_the_gateway_as_the_tokens_principal(
    start_gateway, make_token, start_worker
):
    gateway = start_gateway()
    await start_worker()
    alice = await make_token("alice", "submit")
    code, out, err = await done(await cli(gateway, "submit", "-", "--wait", "--json", token=alice), json.dumps(SPEC))
    assert code == 0, err
    lines = out.strip().splitlines()
    run_id = json.loads(lines[0])["run_id"]
    final = json.loads(lines[-1])
    assert (final["status"], final["successful_calls"], final["owner"]) == ("succeeded", 8, "alice")

    hanging = {"phases": [{"name": "h", "calls": 1, "env": {"FPF_SIM_BEHAVIOUR": "hang"}}]}
    code, out, err = await done(await cli(gateway, "submit", "-", "--json", token=alice), json.dumps(hanging))
    hung = json.loads(out)["run_id"]
    code, out, err = await done(await cli(gateway, "runs", "--json", "--limit", "2", token=alice))
    assert code == 0, err
    assert [r["run_id"] for r in json.loads(out)] == [hung, run_id]
    code, out, err = await done(await cli(gateway, "cancel", hung, "--json", token=alice))
    assert code == 0 and json.loads(out)["status"] in ("cancelled", "cancelling"), err

    bob = await make_token("bob", "submit")
    code, _, err = await done(await cli(gateway, "cancel", run_id, token=bob))
    assert code == 3 and "404" in err, "someone else's run is not found"
    code, _, err = await done(await cli(gateway, "runs", token="lsk_0123456789ab_wrong"))
    assert code == 1 and "401" in err


@pytest.mark.slow  # CLI processes through a gateway, with a restart
async def test_tail_through_the_gateway_resumes_after_the_gateway_restarts(
    start_gateway, redis, publisher, queue_name, start_worker
):
    from livestats_shared.control import submit_run
    from livestats_shared.spec import RunSpec

    gateway = start_gateway(shutdown_grace_s=0)
    longer = {**SPEC, "phases": [{**p, "calls": 10} for p in SPEC["phases"]]}
    run_id = await submit_run(redis, publisher, RunSpec.model_validate(longer), queue_name=queue_name)
    proc = await cli(gateway, "tail", run_id, "--interval", "0.05")
    async with asyncio.timeout(30):
        first = await proc.stdout.readline()  # the view is drawn: history replayed, stream live
    await start_worker()  # only now: tail sees the run from before its first call
    await wait_for_event(redis, run_id, "call.succeeded", count=4)
    await asyncio.to_thread(gateway.stop)
    await asyncio.sleep(0.5)  # down for a moment: tail's first reconnects fail
    await asyncio.to_thread(gateway.start)  # same port, same token
    code, out, err = await done(proc)
    out = first.decode() + out
    assert code == 0, err
    assert "resuming after" in out
    seqs = [int(s) for s in re.findall(r"^\d\d:\d\d:\d\d\.\d{3} #(\d+) ", out, re.M)]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "every event once, in order, across the restart"
    done_counts = [int(m.group(1)) for m in COUNTERS.finditer(out)]
    assert done_counts == sorted(done_counts) and done_counts[-1] == 20
