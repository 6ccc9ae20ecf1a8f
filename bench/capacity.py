"""Late-join replay, ingest, memory per idle connection, RSS over a soak."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import orjson

from .feed import Feed
from .load import Clients
from .procs import ROOT, rss_bytes
from .suite import Bench, each, new_run, summarize

REPLAY_EVENTS = 100_000
LIVE_RATE = 100  # events/s published while a late joiner replays


async def replay(bench: Bench) -> dict[str, Any]:
    """A new client takes a 100,000-event history, then its first live event. Only designs
    that have a history: polling sends a snapshot, broadcaster starts at the live end."""
    out: dict[str, Any] = {}
    for d in each(bench, ("xread", "livestats")):
        run = new_run("replay")
        async with Feed(d.url) as feed:
            await feed.fill(run, REPLAY_EVENTS)
            reps = []
            for _ in range(bench.settings.reps + 1):  # the first join is the warm-up
                async with Clients("replay", [d.ws(run)], headers=d.headers) as client:
                    client.start()
                    feed.start([run], LIVE_RATE)
                    try:
                        reps.append(await client.results(120))
                    finally:
                        await feed.stop()
        out[d.name] = summarize(reps[1:])
    return out


async def ingest(bench: Bench) -> dict[str, Any]:
    """Events/s one worker process publishes, and its caller-side cost per event."""
    out: dict[str, Any] = {}
    for d in each(bench, ("broadcaster", "livestats")):
        reps = []
        for _ in range(bench.settings.reps + 1):  # the first run is the warm-up (imports, script load)
            s = bench.settings
            events = s.ingest_events_broadcaster if d.broadcaster else s.ingest_events
            config = {"url": d.url, "events": events, "design": d.name}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.ingest",
                orjson.dumps(config).decode(),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
            )
            stdout, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"bench.ingest failed ({proc.returncode})")
            reps.append(orjson.loads(stdout))
        out[d.name] = summarize(reps[1:])
    return out


async def memory(bench: Bench) -> dict[str, Any]:
    """Server RSS per idle WebSocket connection (1,000 connections on one quiet run)."""
    n = bench.settings.memory_clients
    out: dict[str, Any] = {}
    for d in each(bench, ("polling", "xread", "broadcaster", "livestats")):
        run = new_run("memory")
        async with Feed(d.url, broadcaster=d.broadcaster) as feed:
            await feed.seed([run])
        reps = []
        for _ in range(min(bench.settings.reps, 2)):  # a server restart each: two are enough
            # A fresh process: one that served other cases reuses the memory they freed.
            bench.restart(d)
            async with Clients(
                "stream", [d.ws(run)], procs=1, headers=d.headers
            ):  # first-connection costs (imports, pools)
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.5)
            before = rss_bytes(d.server.pid)
            async with Clients("stream", [d.ws(run)] * n, procs=2, headers=d.headers):
                await asyncio.sleep(2)  # every session settled (joined, first frames sent)
                after = rss_bytes(d.server.pid)
            await asyncio.sleep(1)
            reps.append(
                {
                    "rss_before_mb": before / 2**20,
                    "rss_after_mb": after / 2**20,
                    "kb_per_conn": (after - before) / n / 1024,
                }
            )
        out[d.name] = summarize(reps)
    return out


async def soak(bench: Bench) -> dict[str, Any]:
    """livestats gateway RSS while 200 clients over 10 runs keep joining and leaving (10% a
    second) and 100 events/s flow. Each run's history is filled to `soak_history` events first
    and capped there, so every join replays about as much at the end as at the start: a
    workload that stops growing, in which RSS growth is a leak, not the allocator's high-water
    mark of ever larger replays. Growth compares the last tenth with the first tenth after a
    warm-up of the first fifth."""
    d = bench.designs["livestats"]
    cap = bench.settings.soak_history or None
    runs = [new_run("soak") for _ in range(10)]
    urls = [d.ws(r) for r in runs for _ in range(20)]
    samples: list[tuple[float, int]] = []
    async with Feed(d.url, maxlen=cap) as feed:
        await feed.seed(runs)
        if cap is not None:
            for run in runs:
                await feed.fill(run, cap)
        feed.start(runs, 100)
        try:
            async with Clients("churn", urls, procs=1, period_s=1.0, share=0.1, headers=d.headers) as clients:
                t0 = time.monotonic()
                while (elapsed := time.monotonic() - t0) < bench.settings.soak_s:
                    samples.append((elapsed, rss_bytes(d.server.pid)))
                    await asyncio.sleep(1)
                clients.send("stop")
                res = await clients.results(60)
        finally:
            await feed.stop()
        history = [await feed.length(run) for run in runs]
    rss = [r for _, r in samples]
    warm = len(rss) // 5
    tenth = max(1, len(rss) // 10)
    first = statistics.median(rss[warm : warm + tenth])
    last = statistics.median(rss[-tenth:])
    return {
        "duration_s": bench.settings.soak_s,
        "history_cap": cap,
        "history_at_end": [min(history), max(history)],
        "joins": res["joins"],
        "events_delivered": res["events"],
        "closed": res["closes"],
        "rss_start_mb": rss[0] / 2**20,
        "rss_after_warmup_mb": first / 2**20,
        "rss_end_mb": last / 2**20,
        "rss_max_mb": max(rss) / 2**20,
        "growth_pct": 100 * (last - first) / first,
        "samples_mb": [round(r / 2**20, 2) for r in rss],
    }
