"""A Cluster primary killed under a live run, timed: what a producer and a gateway's clients see.

    python -m bench.failover [--repeats 5] [--node-timeout-ms 1000] [--out bench/results/failover.json]

Each repeat starts a local Valkey Cluster (3 primaries, 3 replicas; tests/support/cluster.py), a
gateway (`python -m livestats_gateway`) on it and a WebSocket client following a run whose
producer awaits one heartbeat every 10 ms. It SIGKILLs the primary serving the run and records,
from the kill: when every live node agrees that a replica serves the slot (`promoted_s`; the
producer may be served a little before), when the producer's first write
succeeds again (`producer_back_s`), when the client receives the first event written after the
kill (`client_back_s`), and whether the client got a `reset` (events acknowledged by the old
primary that its replica lacked; asynchronous replication, no WAIT). Not a test: nothing here
is asserted, and the figures depend on the machine and on `--cluster-node-timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from livestats_cli.embedded import free_port
from livestats_shared import keys
from livestats_shared.errors import PublishError
from livestats_shared.events import Heartbeat, PhasePlan, RunQueued, RunStarted
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from redis.crc import key_slot
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from cluster import LocalCluster

BEAT_S = 0.01


async def _gateway(url: str, port: int, token: str, log: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "LIVESTATS_REDIS_URL": url,
        "LIVESTATS_GATEWAY_PORT": str(port),
        "LIVESTATS_GATEWAY_ADMIN_TOKEN": token,
    }
    with await asyncio.to_thread(log.open, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "livestats_gateway", env=env, stdout=out, stderr=out
        )
    return proc


async def _follow(url: str, token: str, seen: list[tuple[float, dict[str, Any]]], live: asyncio.Event) -> None:
    """Every frame with its arrival time; reconnects (with `since`) if the socket ends."""
    since = ""
    while True:
        try:
            async with ws_connect(url + since, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                async for raw in ws:
                    frame = orjson.loads(raw)
                    seen.append((time.monotonic(), frame))
                    if frame["type"] == "live":
                        live.set()
                    elif frame["type"] == "events" and frame["events"]:
                        since = f"?since={frame['events'][-1]['id']}"
        except (OSError, ConnectionClosed):
            await asyncio.sleep(0.05)


async def _repeat(node_timeout_ms: int, work: Path) -> dict[str, Any]:
    cluster = LocalCluster(work / "cluster", node_timeout_ms=node_timeout_ms)
    await asyncio.to_thread(cluster.start)
    port, token = free_port(), secrets.token_urlsafe(32)
    gateway = await _gateway(cluster.url, port, token, work / "gateway.log")
    redis = connect(cluster.url, "livestats.bench.failover")
    publisher = await Publisher(redis).start()
    follower: asyncio.Task[None] | None = None
    try:
        run_id = new_run_id()
        slot = key_slot(keys.run_events(run_id).encode())
        plan = RunQueued(name="failover", planned_calls=1, phases=[PhasePlan(name="p", calls=1)], timeout_s=3600)
        await publisher.publish(run_id, plan)
        started = RunStarted(worker="w", timeout_s=3600, deadline_ts=0, retry_budget=0, heartbeat_s=3600)
        await publisher.publish(run_id, started)
        seen: list[tuple[float, dict[str, Any]]] = []
        live = asyncio.Event()
        # It retries until the gateway's port answers.
        follower = asyncio.create_task(_follow(f"ws://127.0.0.1:{port}/ws/runs/{run_id}", token, seen, live))
        async with asyncio.timeout(60):
            await live.wait()
        beat = Heartbeat(elapsed_s=0, remaining_s=0, in_flight=0, pids=[])
        for _ in range(50):
            await publisher.publish(run_id, beat)
            await asyncio.sleep(BEAT_S)

        primary = cluster.primary_of(slot)
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill, primary)
        promoting = asyncio.create_task(asyncio.to_thread(cluster.wait_promoted, slot, primary))
        promoted_at: list[float] = []
        promoting.add_done_callback(lambda _: promoted_at.append(time.monotonic()))
        first_ok: float | None = None
        after_seq: int | None = None
        while first_ok is None or not promoting.done():
            try:
                written = await publisher.publish(run_id, beat, timeout_s=60)
            except PublishError:  # not back yet (the publisher resends it meanwhile)
                await asyncio.sleep(BEAT_S)
                continue
            if first_ok is None:
                first_ok, after_seq = time.monotonic(), written.seq
            await asyncio.sleep(BEAT_S)
        await promoting
        assert after_seq is not None
        client_back: float | None = None
        for _ in range(1000):
            client_back = next(
                (t for t, f in seen if f["type"] == "events" and any(e["seq"] >= after_seq for e in f["events"])
                 and t > killed),
                None,
            )  # fmt: skip
            if client_back is not None:
                break
            await asyncio.sleep(0.01)
        resets = [f for t, f in seen if f["type"] == "reset" and t > killed]
        return {
            "promoted_s": round(promoted_at[0] - killed, 3),
            "producer_back_s": round(first_ok - killed, 3) if first_ok else None,
            "client_back_s": round(client_back - killed, 3) if client_back else None,
            "client_resets": len(resets),
            "lost": (resets[0]["expected_seq"] - resets[0]["next_seq"]) if resets else 0,
        }
    finally:
        if follower is not None:
            follower.cancel()
        await publisher.close()
        await redis.aclose()
        gateway.terminate()
        await gateway.wait()
        await asyncio.to_thread(cluster.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--node-timeout-ms", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="livestats-failover-") as work:
            row = await _repeat(args.node_timeout_ms, Path(work))
        print(json.dumps({"repeat": i + 1, **row}), flush=True)
        rows.append(row)
    summary = {
        key: statistics.median(r[key] for r in rows if r[key] is not None)
        for key in ("promoted_s", "producer_back_s", "client_back_s")
    }
    result = {"node_timeout_ms": args.node_timeout_ms, "repeats": rows, "median": summary}
    print(json.dumps({"median": summary, "node_timeout_ms": args.node_timeout_ms}))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
