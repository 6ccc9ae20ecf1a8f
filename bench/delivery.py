"""Live delivery: end-to-end latency, fan-out throughput, Redis commands per event."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .feed import Feed
from .load import Clients, percentile_ms, snapshot_latencies
from .procs import command_calls, cpu_seconds, wait_seconds
from .suite import DESIGNS, Bench, Design, each, new_run, summarize

# Commands the publishing side sends (livestats' script and what it calls, broadcaster's
# XADD); everything else was sent by the design under test to serve its clients.
WRITER_COMMANDS = frozenset(
    {"evalsha", "eval", "xadd", "hincrby", "hset", "hget", "hmget", "hdel", "expire", "zadd", "zrem"}
    | {"zremrangebyscore", "script", "script|load"}
)


def _delivered(design: Design, feed: Feed, res: dict[str, Any]) -> tuple[dict[int, int], int, int]:
    """Latency histogram, worst latency (ns) and events delivered in a window."""
    if design.name == "polling":
        return snapshot_latencies(res["snapshots"], feed.sent)
    return res["hist"], res["max_ns"], res["events"]


async def _windows(
    bench: Bench, design: Design, feed: Feed, clients: Clients, run_ids: list[str], nreps: int
) -> list[dict[str, Any]]:
    """Warm up, then measure `nreps` windows: latency, delivery, CPU, Redis commands."""
    s = bench.settings
    await asyncio.sleep(s.warmup_s)
    reps = []
    for _ in range(nreps):
        calls0 = command_calls(design.url)
        published0 = sum(len(feed.sent[r]) for r in run_ids)
        cpu0, wait0 = cpu_seconds(design.server.pid), wait_seconds(design.server.pid)
        clients.start()
        await asyncio.sleep(s.window_s)
        published = sum(len(feed.sent[r]) for r in run_ids) - published0
        cpu = cpu_seconds(design.server.pid) - cpu0
        wait = wait_seconds(design.server.pid) - wait0
        res = await clients.stop()
        window = res["window_s"]  # as the clients measured it: stopping can take a while
        calls1 = command_calls(design.url)
        diff = {k: v - calls0.get(k, 0) for k, v in calls1.items() if v != calls0.get(k, 0)}
        served = sum(v for k, v in diff.items() if k not in WRITER_COMMANDS)
        hist, worst, delivered = _delivered(design, feed, res)
        reps.append(
            {
                "p50_ms": percentile_ms(hist, 0.5),
                "p99_ms": percentile_ms(hist, 0.99),
                "max_ms": worst / 1e6,
                "published_per_s": published / s.window_s,
                "delivered_per_s": delivered / window,
                "frames_per_s": res["frames"] / window,
                "window_s": window,
                "server_cpu": cpu / s.window_s,  # cores busy
                # CPU per delivery: what a busy machine changes least (latency is mostly queueing then)
                "server_cpu_us_per_delivered": cpu / s.window_s / (delivered / window) * 1e6 if delivered else None,
                "client_cpu": res["client_cpu_s"] / window,
                # Shares of the window spent runnable but without a core: > 0.1 means the machine,
                # not the design, set the pace (2 cores shared by server, clients, Redis, feed).
                "server_wait": wait / s.window_s,
                "client_wait": res["client_wait_s"] / window,
                "load_avg_1m": os.getloadavg()[0],
                "publish_ms_max": res["publish_ms_max"],
                "commands": served,
                "commands_per_published": served / published if published else None,
                "commands_per_delivered": served / delivered if delivered else None,
                "closed": sum(v for k, v in res["closes"].items()),
                "command_mix": diff,
            }
        )
    return reps


async def _case(
    bench: Bench, design: Design, case: str, runs: int, clients_per_run: int, rate: float, nreps: int | None = None
) -> dict[str, Any]:
    run_ids = [new_run(case) for _ in range(runs)]
    urls = [design.ws(r) for r in run_ids for _ in range(clients_per_run)]
    async with Feed(design.url, broadcaster=design.broadcaster) as feed:
        await feed.seed(run_ids)
        async with Clients("stream", urls, procs=2 if len(urls) > 100 else 1, headers=design.headers) as clients:
            feed.start(run_ids, rate)
            try:
                reps = await _windows(bench, design, feed, clients, run_ids, nreps or bench.settings.reps)
            finally:
                await feed.stop()
    out = summarize(reps)
    out["feed_lag_s"] = feed.lag_s
    return out


async def latency(bench: Bench) -> dict[str, Any]:
    """100 clients on one run at 1,000 events/s."""
    s = bench.settings
    out = {}
    for d in each(bench, DESIGNS):
        out[d.name] = await _case(bench, d, "latency", 1, s.latency_clients, s.latency_rate)
    return out


async def fanout(bench: Bench) -> dict[str, Any]:
    """1,000 clients over 10 runs; events delivered per second by the one server process."""
    rate = bench.settings.fanout_rate
    return {d.name: await _case(bench, d, "fanout", 10, 100, rate) for d in each(bench, DESIGNS)}


async def commands(bench: Bench) -> dict[str, Any]:
    """Redis commands per event with 1, 100 and 1,000 clients on one run."""
    rate = bench.settings.commands_rate
    audiences = [int(n) for n in bench.settings.commands_clients.split(",")]
    out: dict[str, Any] = {}
    for d in each(bench, DESIGNS):
        nreps = bench.settings.commands_reps
        out[d.name] = {str(n): await _case(bench, d, f"commands{n}", 1, n, rate, nreps) for n in audiences}
    return out
