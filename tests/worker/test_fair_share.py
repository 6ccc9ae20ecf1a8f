"""Fair share end to end: a real gateway, a real worker with 4 slots, real FPF processes."""

from __future__ import annotations

from helpers import wait_for_event
from livestats_shared.history import read_status

# Each of alice's runs holds a slot ~2 s: in one FIFO queue her 50 runs would keep bob's run
# waiting ~25 s (12 waves), well past the 10 s bound below.
SLOW = {"name": "flood", "phases": [{"name": "generate", "calls": 1, "env": {"FPF_SIM_LATENCY_MS": "2000"}}]}
QUICK = {"name": "one-call", "phases": [{"name": "generate", "calls": 1, "env": {"FPF_SIM_LATENCY_MS": "20"}}]}


async def test_one_principals_flood_does_not_keep_another_principals_run_waiting(
    start_gateway, make_token, start_worker, redis
):
    gw = start_gateway()
    await start_worker(max_runs=4)
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with gw.client(alice) as client:
        flood = [(await client.post("/api/runs", json=SLOW)).json()["run_id"] for _ in range(50)]
    async with gw.client(bob) as client:
        answer = await client.post("/api/runs", json=QUICK)
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        # The bound is the failure bound: the run starts as soon as one of alice's runs ends.
        await wait_for_event(redis, run_id, "run.started", timeout_s=10)
    statuses = [await read_status(redis, rid) for rid in flood]
    started = sum(s != "queued" for s in statuses)
    # Alice's first wave (4) and at most a few more that raced bob's dispatch; FIFO would be ~48.
    assert started <= 8, statuses
