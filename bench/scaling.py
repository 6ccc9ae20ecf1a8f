"""Gateway processes: the latency and fan-out workloads through a gateway of 1, then 2
processes (`livestats gateway --processes N`, SO_REUSEPORT), each with a Valkey of its own.

Besides the figures of the latency and fan-out cases (among them what tells whether the load
generators kept up: their CPU, the deliveries they counted against those offered, the clients
closed for falling behind), each records how the kernel spread the work: the events each
process queued to clients, from its private /metrics.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .delivery import _case
from .procs import start_gateway, start_valkey
from .suite import Bench, Design

EVENTS_SENT = "livestats_gateway_events_sent_total"


def _events_sent(port: int) -> float:
    """Events one gateway process has queued to clients so far (live and replay)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == EVENTS_SENT
    )


async def processes(bench: Bench) -> dict[str, Any]:
    s = bench.settings
    out: dict[str, Any] = {}
    for count in (int(c) for c in s.procs_counts.split(",")):
        name = f"livestats-{count}p"
        valkey = start_valkey(bench.workdir / name)
        try:
            server = start_gateway(valkey.url, bench.workdir, processes=count, name=name)
        except BaseException:
            valkey.stop()
            raise
        design = Design("livestats", valkey, server)
        try:
            result: dict[str, Any] = {}
            for case, runs, per_run, rate in (
                ("latency", 1, s.latency_clients, s.latency_rate),
                ("fanout", 10, 100, s.procs_rate),
            ):
                before = [_events_sent(p) for p in server.private_ports]
                result[case] = await _case(bench, design, f"procs{count}-{case}", runs, per_run, rate)
                queued = [_events_sent(p) - b for p, b in zip(server.private_ports, before, strict=True)]
                # Spread: the share each process queued (the kernel's hash of the connections).
                result[case]["events_queued_by_process"] = queued
            out[str(count)] = result
        finally:
            server.stop()
            valkey.stop()
    return out
