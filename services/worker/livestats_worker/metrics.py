"""Prometheus metrics of one worker process: what this process itself did, never per-run labels.

Each process counts only the runs and calls it executed, so summing over workers is exact
however many run. Labels are bounded: phase and model names come from allowlists in the
settings (anything else is `other`), outcome and error type from the contract's enums.
`livestats_queue_depth` is the same number seen from every worker: query it with max().

The exposition is prometheus_client's HTTP server in a thread of its own: it answers even when
the event loop is stuck, and `livestats_worker_heartbeat_timestamp_seconds` (set by a loop
task) then stops advancing, which is what the worker-down alert looks for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from livestats_shared.events import FailureReason, Outcome, TokenUsage
from livestats_shared.pricing import NANO_PER_USD
from livestats_shared.redis_client import UNAVAILABLE
from livestats_shared.spec import PhaseSpec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from redis.asyncio import Redis

from .config import WorkerConfig
from .model_labels import model_allowlist

log = logging.getLogger("livestats.worker.metrics")

OTHER = "other"  # label value for a phase or model that is not on the allowlist
NO_ERROR = "none"  # error_type of a successful call
# Seconds. Calls are LLM round trips (sub-second to minutes); runs last minutes to hours.
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_QUEUE_CHECK_TIMEOUT_S = 2.0
_QUEUE_CHECK_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)


@dataclass(frozen=True)
class CallLabels:
    """The bounded labels of one phase's calls, resolved once per phase."""

    phase: str
    model: str


class WorkerMetrics:
    """Every worker metric, in a registry of its own (tests run several workers in one process)."""

    def __init__(self, *, phases: Iterable[str], models: Iterable[str], default_model: str = "") -> None:
        self.phases = frozenset(phases)
        self.models = frozenset(models)
        self.default_model = default_model  # a phase without FPF_MODEL runs FPF with this one
        self.registry = r = CollectorRegistry()
        self.runs_started = Counter("livestats_runs_started", "Runs this worker started.", registry=r)
        self.runs_finished = Counter(
            "livestats_runs_finished", "Runs this worker finished, by outcome.", ["outcome"], registry=r
        )
        self.run_duration = Histogram(
            "livestats_run_duration_seconds", "Run duration.", ["outcome"], buckets=RUN_BUCKETS, registry=r
        )
        self.calls = Counter(
            "livestats_calls",
            "FPF call attempts that ended, by outcome and error type (each attempt is one call).",
            ["phase", "model", "outcome", "error_type"],
            registry=r,
        )
        self.call_duration = Histogram(
            "livestats_call_duration_seconds",
            "FPF call attempt duration, spawn to exit.",
            ["phase", "model", "outcome"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "livestats_call_retries", "Retries scheduled, by reason.", ["phase", "model", "reason"], registry=r
        )
        self.in_flight = Gauge("livestats_calls_in_flight", "FPF calls running now on this worker.", registry=r)
        self.kills = Counter(
            "livestats_subprocess_kills",
            "FPF process groups killed by the worker, by reason (timeout, output_overflow, cancelled).",
            ["reason"],
            registry=r,
        )
        self.tokens_predicted = Counter(
            "livestats_tokens_predicted", "Tokens predicted by specs (first attempts).", ["phase", "model"], registry=r
        )
        self.tokens = Counter(
            "livestats_tokens", "Tokens reported by FPF answers.", ["phase", "model", "type"], registry=r
        )
        self.budget_exhausted = Counter(
            "livestats_retry_budget_exhaustions", "Runs stopped because their retry budget ran out.", registry=r
        )
        self.last_success = Gauge(
            "livestats_last_successful_run_timestamp_seconds",
            "When this worker last finished a run that succeeded (0: never); query max().",
            registry=r,
        )
        self.cost_usd = Counter(
            "livestats_cost_usd",
            "Cost of FPF attempts at the operator's price table, USD (priced attempts only).",
            ["phase", "model"],
            registry=r,
        )
        self.runs_in_progress = Gauge("livestats_worker_runs_in_progress", "Runs executing on this worker.", registry=r)
        self.heartbeat = Gauge(
            "livestats_worker_heartbeat_timestamp_seconds",
            "Last time this worker's event loop ran its metrics tick; stale means stuck.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "livestats_queue_depth", "Jobs waiting in the arq queue (every worker sees the same: max()).", registry=r
        )
        self.queue_depth.set(0)
        self.redis_up = Gauge(
            "livestats_worker_redis_up",
            "1 if this worker's last Redis check (every heartbeat tick: arq's pool, and the telemetry "
            "server if it is another) answered, else 0.",
            registry=r,
        )

    @classmethod
    def for_config(cls, config: WorkerConfig) -> WorkerMetrics:
        models = model_allowlist(config.metrics_models, config.fpf_model)
        return cls(phases=config.metrics_phases, models=models, default_model=config.fpf_model)

    def labels_for(self, phase: PhaseSpec) -> CallLabels:
        model = phase.model or phase.env.get("FPF_MODEL", self.default_model)
        return CallLabels(
            phase=phase.name if phase.name in self.phases else OTHER,
            model=model if model in self.models else OTHER,
        )

    def run_finished(self, outcome: Outcome, duration_s: float | None) -> None:
        self.runs_finished.labels(outcome.value).inc()
        if duration_s is not None:
            self.run_duration.labels(outcome.value).observe(duration_s)
        if outcome is Outcome.SUCCEEDED:
            self.last_success.set(time.time())

    def call_ended(self, labels: CallLabels, reason: FailureReason | None, duration_s: float) -> None:
        outcome = "succeeded" if reason is None else "failed"
        self.calls.labels(labels.phase, labels.model, outcome, reason.value if reason else NO_ERROR).inc()
        self.call_duration.labels(labels.phase, labels.model, outcome).observe(duration_s)

    def cost(self, labels: CallLabels, model: str | None, cost_nusd: int | None) -> None:
        """An attempt's priced cost, by the model its answer named (allowlisted, else `other`)."""
        if cost_nusd is not None:
            label = model if model is not None and model in self.models else labels.model
            self.cost_usd.labels(labels.phase, label).inc(cost_nusd / NANO_PER_USD)

    def usage(self, labels: CallLabels, usage: TokenUsage | None) -> None:
        if usage is not None:
            self.tokens.labels(labels.phase, labels.model, "input").inc(usage.input_tokens)
            self.tokens.labels(labels.phase, labels.model, "output").inc(usage.output_tokens)

    async def tick_forever(
        self, redis: Redis, queue_name: str, interval_s: float, telemetry: Redis | None = None
    ) -> None:
        """Heartbeat, queue depth and Redis reachability, every `interval_s`, until cancelled.
        `livestats-worker --check` (health.py) reads the first and the last. `telemetry`: the
        telemetry server's client when it is not the queue's, pinged too."""
        while True:
            self.heartbeat.set(time.time())
            try:
                async with asyncio.timeout(_QUEUE_CHECK_TIMEOUT_S):
                    self.queue_depth.set(await redis.zcard(queue_name))
                    if telemetry is not None:
                        await telemetry.ping()
                self.redis_up.set(1)
            except _QUEUE_CHECK_ERRORS as exc:
                self.redis_up.set(0)
                log.warning("queue depth not updated: %s", exc)
            await asyncio.sleep(interval_s)


class MetricsServer(AbstractContextManager["MetricsServer"]):
    """prometheus_client's HTTP exposition on (host, port), stopped on exit. Port 0: off."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._served: tuple[WSGIServer, Thread] | None = None
        if port:
            self._served = start_http_server(port, addr=host, registry=registry)
            log.info("metrics on http://%s:%d/metrics", host, port)

    def __exit__(self, *exc: object) -> None:
        if self._served is not None:
            server, thread = self._served
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._served = None
