"""The suite's settings (quick / full) and the systems under test: each design gets its own
Valkey server, so INFO commandstats counts that design's commands alone."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livestats_cli.embedded import EmbeddedServer

from .procs import Server, start_alternative, start_gateway, start_valkey

DESIGNS = ("polling", "xread", "broadcaster", "livestats")
LABELS = {
    "polling": "(a) polling",
    "xread": "(b) XREAD/client",
    "broadcaster": "(c) broadcaster",
    "livestats": "(d) livestats",
}
MODULES = {"polling": "polling", "xread": "xread", "broadcaster": "broadcast"}


@dataclass
class Settings:
    quick: bool
    reps: int  # measured windows per case, after the warm-up
    window_s: float
    warmup_s: float
    soak_s: float
    latency_rate: float = 1_000  # events/s on one run (the workload)
    latency_clients: int = 100
    fanout_rate: float = 1_500  # events/s over 10 runs of 100 clients: 150,000 deliveries/s offered
    # Gateway processes (bench/scaling.py): the latency case's workload, and the fan-out case's
    # at this rate (events/s over 10 runs of 100 clients), through 1, then 2 processes.
    procs_counts: str = "1,2"
    procs_rate: float = 1_500
    commands_rate: float = 200  # events/s on one run, for commands per event
    commands_clients: str = "1,100,1000"  # audiences compared
    commands_reps: int = 2  # 12 cases: fewer windows keep the full suite under 15 minutes
    ingest_events: int = 100_000
    ingest_events_broadcaster: int = 10_000  # one awaited XADD each: ~2,000/s
    memory_clients: int = 1_000
    # Soak: each run's history is filled to this many events first and capped there (MAXLEN ~),
    # so the workload stops growing and RSS growth means a leak; 0: uncapped, histories grow.
    soak_history: int = 2_000

    @classmethod
    def make(cls, quick: bool, soak_s: float | None) -> Settings:
        if quick:
            # One window per case and the extremes of the audience only: a smoke run, < 2 min.
            return cls(
                True,
                reps=1,
                window_s=1.5,
                warmup_s=1.0,
                soak_s=soak_s or 10,
                commands_clients="1,1000",
                commands_reps=1,
                ingest_events=50_000,
                ingest_events_broadcaster=4_000,
                memory_clients=500,  # per-connection RSS settles well before 1,000
            )
        # 2 s windows: the cases other than the 10-minute soak take about 4 minutes.
        return cls(False, reps=3, window_s=2.0, warmup_s=2.0, soak_s=soak_s or 600)


@dataclass
class Design:
    name: str
    valkey: EmbeddedServer
    server: Server

    @property
    def url(self) -> str:
        return self.valkey.url

    @property
    def broadcaster(self) -> bool:
        return self.name == "broadcaster"

    @property
    def headers(self) -> dict[str, str]:
        return self.server.headers

    def ws(self, run: str) -> str:
        return f"{self.server.ws}/ws/runs/{run}"


@dataclass
class Bench:
    settings: Settings
    workdir: Path
    designs: dict[str, Design] = field(default_factory=dict)

    def start(self, names: tuple[str, ...]) -> None:
        for name in names:
            valkey = start_valkey(self.workdir / name)
            try:
                server = self._serve(name, valkey.url)
            except BaseException:
                valkey.stop()
                raise
            self.designs[name] = Design(name, valkey, server)

    def _serve(self, name: str, url: str) -> Server:
        if name == "livestats":
            return start_gateway(url, self.workdir)
        return start_alternative(MODULES[name], url, self.workdir)

    def restart(self, design: Design) -> Server:
        """The design's server as a new process (same Valkey)."""
        design.server.stop()
        design.server = self._serve(design.name, design.url)
        return design.server

    def stop(self) -> None:
        for design in self.designs.values():
            design.server.stop()
            design.valkey.stop()


def new_run(case: str) -> str:
    return f"bench-{case}-{uuid.uuid4().hex[:8]}"


def summarize(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: the median over repetitions and the spread (min, max)."""
    out: dict[str, Any] = {"reps": reps}
    for key in reps[0]:
        values = [r[key] for r in reps if isinstance(r.get(key), int | float)]
        if values:
            out[key] = statistics.median(values)
            out[key + "_spread"] = [min(values), max(values)]
    return out


def each(bench: Bench, names: tuple[str, ...]) -> list[Design]:
    return [bench.designs[n] for n in names if n in bench.designs]


Case = Callable[[Bench], Any]
