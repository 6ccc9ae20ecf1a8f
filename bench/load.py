"""Driving load-generator processes (bench/clients.py) from the coordinator, and merging what
they measured."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from .clients import BUCKET_NS
from .procs import ROOT, cpu_seconds, wait_seconds

READY_TIMEOUT_S = 180


class Clients:
    """`urls` spread over `procs` processes (2 cores: more than two only adds switching).
    Their stderr goes to .run/bench/clients.log."""

    log_path = ROOT / ".run" / "bench" / "clients.log"

    def __init__(self, mode: str, urls: list[str], procs: int = 1, **extra: Any) -> None:
        self.mode, self.urls, self.nprocs, self.extra = mode, urls, procs, extra
        self.procs: list[asyncio.subprocess.Process] = []
        self._cpu0 = 0.0
        self._wait0 = 0.0

    async def __aenter__(self) -> Clients:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for i in range(self.nprocs):
            config = {"mode": self.mode, "urls": self.urls[i :: self.nprocs], **self.extra}
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.clients",
                    orjson.dumps(config).decode(),
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=self.log_path.open("ab"),
                    limit=1 << 28,  # one line of results can be large (histograms, snapshots)
                )
            )
        async with asyncio.timeout(READY_TIMEOUT_S):
            for proc in self.procs:
                line = await self._line(proc)
                if line != b"ready":
                    raise RuntimeError(f"load generator did not start: {line[:200]!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            if proc.returncode is None and not proc.stdin.is_closing():
                proc.stdin.write(b"exit\n")  # a replay client may have exited already: harmless
                proc.stdin.close()
        for proc in self.procs:
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def send(self, command: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")

    def start(self) -> None:
        self._cpu0 = self.cpu_seconds()
        self._wait0 = self.wait_seconds()
        self.send("start")

    async def stop(self, timeout_s: float = 120) -> dict[str, Any]:
        """End the window; the merged results of every process, with their CPU time."""
        self.send("stop")
        return await self.results(timeout_s)

    async def results(self, timeout_s: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            parts = [orjson.loads(await self._line(p)) for p in self.procs]
        merged = merge(parts)
        merged["client_cpu_s"] = self.cpu_seconds() - self._cpu0
        merged["client_wait_s"] = self.wait_seconds() - self._wait0
        return merged

    def cpu_seconds(self) -> float:
        """CPU time of the load generators still running (a replay or churn client exits once it
        has printed its results, before anyone waited for it)."""
        total = 0.0
        for proc in self.procs:
            try:
                total += cpu_seconds(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited: its share since start() is lost, and it was the last moments
        return total

    def wait_seconds(self) -> float:
        """Time the load generators still running spent waiting for a core (procs.wait_seconds)."""
        total = 0.0
        for proc in self.procs:
            try:
                total += wait_seconds(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return total

    @staticmethod
    async def _line(proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {proc.pid} exited ({await proc.wait()}); see {Clients.log_path}")
        return line.strip()


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1 and "hist" not in parts[0]:
        return parts[0]
    hist: Counter[int] = Counter()
    closes: Counter[str] = Counter()
    for part in parts:
        hist.update({int(k): v for k, v in part["hist"].items()})
        closes.update(part["closes"])
    return {
        "events": sum(p["events"] for p in parts),
        "frames": sum(p["frames"] for p in parts),
        "hist": hist,
        "max_ns": max(p["max_ns"] for p in parts),
        "snapshots": [s for p in parts for s in p["snapshots"]],
        "closes": dict(closes),
        "joins": sum(p["joins"] for p in parts),
        "publish_ms_max": max((p["publish_ms_max"] for p in parts if p["publish_ms_max"] is not None), default=None),
        "window_s": max(p["window_s"] for p in parts),
    }


def percentile_ms(hist: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a latency histogram, in ms (to the middle of a 20 us bucket)."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return (b + 0.5) * BUCKET_NS / 1e6
    raise AssertionError("unreachable")


def snapshot_latencies(snapshots: list[list[Any]], sent: dict[str, list[int]]) -> tuple[Counter[int], int, int]:
    """Polling design: a snapshot with seq S delivers every event after the client's previous
    snapshot up to S, each as late as the snapshot. The first snapshot a client gets in the
    window is its baseline. Returns (histogram, max ns, events delivered)."""
    hist: Counter[int] = Counter()
    worst = delivered = 0
    by_client: dict[str, list[tuple[int, int]]] = {}
    for key, seq, received in snapshots:
        by_client.setdefault(key, []).append((received, seq))
    for key, frames in by_client.items():
        times = sent[key.partition(":")[2]]
        frames.sort()
        prev = frames[0][1]
        for received, seq in frames[1:]:
            for s in range(prev + 1, seq + 1):
                lat = received - times[s - 1]
                hist[lat // BUCKET_NS] += 1
                worst = max(worst, lat)
            delivered += max(0, seq - prev)
            prev = max(prev, seq)
    return hist, worst, delivered
