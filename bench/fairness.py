"""One user's heavy reads against another user's latency (issue 15).

`python -m bench.fairness [--seconds S] [--replayers N] [--listers N]`

A gateway process on a Valkey of its own. `heavy` runs N WebSocket replays of a 100,000-event run
in a loop and M loops of `GET /api/runs` while it can see none of the newest 5,000 runs; `light`
meanwhile asks for its run list and one run's snapshot, one request after the other. Prints
light's latency (median, p99) alone and under heavy's load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import websockets.asyncio.client as ws_client
from livestats_shared import keys
from livestats_shared.auth import Scope, TokenStore
from livestats_shared.control import submit_run
from livestats_shared.events import CallStarted, CallSucceeded, Outcome, RunFinished
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from livestats_shared.spec import PhaseSpec, RunSpec

from .procs import start_gateway, start_valkey

HISTORY = 100_000  # events in heavy's replayed run
FOREIGN = 5_000  # newest runs, of a third user


async def _populate(url: str) -> tuple[str, str, str, str]:
    redis = connect(url, "livestats.bench")
    store = TokenStore(redis)
    _, heavy = await store.create("heavy", [Scope.SUBMIT], [])
    _, light = await store.create("light", [Scope.SUBMIT], [])
    external = RunSpec(name="history", external=True, phases=[PhaseSpec(name="generate", calls=HISTORY // 2)])
    async with Publisher(redis) as publisher:
        big = await submit_run(redis, publisher, external, owner="heavy")
        for call in range(HISTORY // 2 - 1):
            publisher.emit(big, CallStarted(phase="generate", call=call, attempt=1))
            publisher.emit(big, CallSucceeded(phase="generate", call=call, attempt=1, duration_s=0.1, bytes=400))
        await publisher.publish(big, RunFinished(outcome=Outcome.SUCCEEDED, reason="completed"))
        small = RunSpec(name="mine", external=True, phases=[PhaseSpec(name="generate", calls=1)])
        mine = await submit_run(redis, publisher, small, owner="light")
    base = int(time.time() * 1000) + 1
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(FOREIGN):
            rid = f"foreign-{i:05d}"
            pipe.zadd(keys.RUNS_INDEX, {rid: base + i})
            pipe.hset(keys.run_stats(rid), mapping={"status": "succeeded", "owner": "someone", "name": "x"})
        await pipe.execute()
    await redis.aclose()
    return heavy, light, big, mine


async def _replay_forever(ws_url: str, token: str, run_id: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        headers = {"Authorization": f"Bearer {token}"}
        async with ws_client.connect(f"{ws_url}/ws/runs/{run_id}", additional_headers=headers, max_size=None) as ws:
            async for frame in ws:
                if stop.is_set() or "run.finished" in str(frame):
                    break


async def _list_forever(http: str, token: str, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=http, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while not stop.is_set():
            (await c.get("/api/runs", params={"limit": 50})).raise_for_status()


async def _measure(http: str, token: str, run_id: str, seconds: float) -> list[float]:
    took: list[float] = []
    async with httpx.AsyncClient(base_url=http, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for path in ("/api/runs", f"/api/runs/{run_id}"):
                started = time.monotonic()
                (await c.get(path)).raise_for_status()
                took.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    return took


def _summary(took: list[float]) -> str:
    ms = sorted(t * 1000 for t in took)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{len(ms)} requests, median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms"


async def main(seconds: float, replayers: int, listers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        valkey = start_valkey(Path(tmp))
        gateway = start_gateway(valkey.url, Path(tmp))
        try:
            heavy, light, big, mine = await _populate(valkey.url)
            http = f"http://127.0.0.1:{gateway.port}"
            print("light alone:        ", _summary(await _measure(http, light, mine, seconds / 3)))
            stop = asyncio.Event()
            load = [asyncio.create_task(_replay_forever(gateway.ws, heavy, big, stop)) for _ in range(replayers)]
            load += [asyncio.create_task(_list_forever(http, heavy, stop)) for _ in range(listers)]
            await asyncio.sleep(1.0)  # the load is under way
            print("light, heavy loading:", _summary(await _measure(http, light, mine, seconds)))
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
        finally:
            gateway.stop()
            valkey.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--replayers", type=int, default=100)
    parser.add_argument("--listers", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.replayers, args.listers))
