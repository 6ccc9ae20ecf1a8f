"""What replica acknowledgement (LIVESTATS_PUBLISH_REPLICAS=1: WAIT after each write) costs a
publisher, on a primary with one replica on this machine.

    python -m bench.replica_ack [--events N]

Two workloads, each with acknowledgement off and on:
- awaited: `await publish(...)` one event at a time (a guarded lifecycle change, a cancel): the
  latency a caller waits, p50 and p99;
- emitted: `emit(...)` N events and flush (a worker's call events): events/s, where one WAIT
  covers a whole batch of chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from livestats_cli.compat import valkey_binary
from livestats_cli.embedded import free_port
from livestats_shared.events import Heartbeat, PhasePlan, RunQueued, RunStarted
from livestats_shared.publish import Publisher
from livestats_shared.publish.replicas import ReplicaAck
from livestats_shared.redis_client import connect
from redis import Redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .suite import Bench

AWAITED = 5_000
EMITTED = 100_000
BEAT = Heartbeat(elapsed_s=1, remaining_s=1, in_flight=0, pids=[])


def _start(port: int, directory: Path, primary: int | None = None) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    argv = [str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
    if primary is not None:
        argv += ["--replicaof", "127.0.0.1", str(primary)]
    with open(directory / "server.log", "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, RedisError):
            pass  # not listening yet: asked again below
        time.sleep(0.02)
    raise RuntimeError(f"{what} within 30 s")


async def _open(pub: Publisher) -> str:
    run = f"bench-ack-{uuid.uuid4().hex[:8]}"
    plan = RunQueued(name="bench", planned_calls=1, phases=[PhasePlan(name="b", calls=1)], timeout_s=3600)
    await pub.publish(run, plan)
    await pub.publish(run, RunStarted(worker="bench", timeout_s=3600, deadline_ts=0, retry_budget=0))
    return run


ROUNDS = 10  # off and on alternate, so a change in the machine's load hits both alike


async def measure(url: str, awaited: int, emitted: int) -> dict[str, dict[str, float]]:
    """Both publishers (acknowledgement off, on) open at once on one primary, taking turns."""
    clients = {label: connect(url, f"livestats.bench.replica_ack.{label}") for label in ("off", "on")}
    pubs = {
        label: await Publisher(client, replica_ack=ReplicaAck(int(label == "on"), 1_000), capacity=emitted + 1).start()
        for label, client in clients.items()
    }
    latencies: dict[str, list[float]] = {label: [] for label in pubs}
    rates: dict[str, list[float]] = {label: [] for label in pubs}
    try:
        runs = {label: await _open(pub) for label, pub in pubs.items()}
        for label, pub in pubs.items():  # warm-up
            for _ in range(100):
                await pub.publish(runs[label], BEAT)
        for _ in range(ROUNDS):
            for label, pub in pubs.items():
                for _ in range(awaited // ROUNDS):
                    t0 = time.perf_counter()
                    await pub.publish(runs[label], BEAT)
                    latencies[label].append((time.perf_counter() - t0) * 1000)
                rates[label].append(await _emit(pub, runs[label], emitted // ROUNDS))
        out = {}
        for label, pub in pubs.items():
            if pub.acks.unreplicated_chunks:
                raise RuntimeError(f"{pub.acks.unreplicated_chunks} chunks were not acknowledged in time")
            cuts = statistics.quantiles(latencies[label], n=100)
            out[label] = {"p50_ms": cuts[49], "p99_ms": cuts[98], "events_per_s": statistics.median(rates[label])}
        return out
    finally:
        for label, pub in pubs.items():
            await pub.close()
            await clients[label].aclose()


async def _emit(pub: Publisher, run: str, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        pub.emit(run, BEAT)
        if i % 1_000 == 999:
            await asyncio.sleep(0)
    if not await pub.flush(120):
        raise RuntimeError("publisher did not flush")
    return n / (time.perf_counter() - t0)


async def run(awaited: int = AWAITED, emitted: int = EMITTED, workdir: Path | None = None) -> dict[str, Any]:
    """Start a primary and a replica, measure with acknowledgement off and on, stop them."""
    base = workdir or Path(tempfile.mkdtemp(prefix="livestats-bench-ack-"))
    primary_port, replica_port = free_port(), free_port()
    servers = [_start(primary_port, base / "primary")]
    try:
        servers.append(_start(replica_port, base / "replica", primary_port))
        replica: Any = Redis(host="127.0.0.1", port=replica_port, decode_responses=True)
        _wait(lambda: replica.info("replication").get("master_link_status") == "up", "replica linked")
        replica.close()
        url = f"redis://127.0.0.1:{primary_port}/0"
        return {"awaited": awaited, "emitted": emitted, **await measure(url, awaited, emitted)}
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)


async def case(bench: Bench) -> dict[str, Any]:
    """The suite's case (`--only replica_ack`): its own primary and replica under the bench's workdir."""
    scale = 2 if bench.settings.quick else 1
    return await run(AWAITED // scale, EMITTED // scale, bench.workdir / "replica_ack")


def table(result: dict[str, Any]) -> str:
    off, on = result["off"], result["on"]
    lines = [
        "| publisher, primary + 1 replica | acknowledgement off | WAIT for 1 replica |",
        "|---|---|---|",
        f"| awaited publish p50 ms | {off['p50_ms']:.3f} | {on['p50_ms']:.3f} |",
        f"| awaited publish p99 ms | {off['p99_ms']:.3f} | {on['p99_ms']:.3f} |",
        f"| emitted events/s | {off['events_per_s']:,.0f} | {on['events_per_s']:,.0f} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replica_ack", description=__doc__)
    parser.add_argument("--awaited", type=int, default=AWAITED, help="events published one at a time")
    parser.add_argument("--events", type=int, default=EMITTED, help="events emitted, then flushed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.awaited, args.events))
    print(orjson.dumps(result).decode() if args.json else table(result), end="" if not args.json else "\n")


if __name__ == "__main__":
    main()
