"""Fair share end to end: a real gateway, a real worker with 4 slots, real FPF processes."""

from __future__ import annotations

from helpers import wait_for_event
from livestats_shared.history import read_status

# Each of alice's runs holds a slot ~1 s and more: in one FIFO queue her 50 runs would keep
# bob's run waiting 12 waves (> 12 s), past the 10 s bound below; the count of alice's runs
# started before bob's tells FIFO from fair share whatever the machine's load.
SLOW = {"name": "flood", "phases": [{"name": "generate", "calls": 1, "env": {"FPF_SIM_LATENCY_MS": "1000"}}]}
QUICK = {"name": "one-call", "phases": [{"name": "generate", "calls": 1, "env": {"FPF_SIM_LATENCY_MS": "20"}}]}


async def test_one_principals_flood_does_not_keep_another_principals_run_waiting(
    start_gateway, make_token, start_worker, redis
):
    gw = start_gateway()
    await start_worker(max_runs=4)
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with gw.client(alice) as client:
        flood = [(await client.post("/api/runs", json=SLOW)).json()["run_id"] for _ in range(50)]
    before = await _started(redis, flood)
    async with gw.client(bob) as client:
        answer = await client.post("/api/runs", json=QUICK)
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        # The bound is the failure bound: the run starts as soon as one of alice's runs ends.
        await wait_for_event(redis, run_id, "run.started", timeout_s=10)
    # Between bob's submission and his run's start, at most the runs alice already had in
    # flight (4 slots) and one that raced his turn started; FIFO would start all of her backlog.
    assert await _started(redis, flood) - before <= 5


async def _started(redis, run_ids: list[str]) -> int:
    return sum([await read_status(redis, rid) != "queued" for rid in run_ids])
