"""Comparing models across runs: per model and phase, how often calls succeed, how fast, how
many tokens, at what cost, and how far the token estimate was off.

Everything is computed from the runs' events (a stream read back, or an export file), so the
figures are exact and a past run reads the same whatever the price table says today: cost
comes from the cost each call event carries (its price at the time).

A call's model is the one its answer stated (`model` in call.succeeded / call.failed), else
the phase's declared model (the spec's `model`, carried by phase.started), else "unknown".

Per (model, phase) row:
    calls              distinct calls that ended (succeeded or given up)
    success_rate       percent of those that succeeded
    retries_per_call   call.retrying events / calls
    latency p50/p95    seconds, over every attempt that ended (succeeded or failed)
    tokens in/out      summed usage of every attempt that reported usage
    cost_per_success   USD: priced cost of every attempt / successful calls; None if any
                       attempt with usage had no price (`unpriced_attempts` says how many)
    mean_smape         percent, over the (run, phase) pairs of this model whose phase finished
                       with a prediction (the phase's predicted vs its answers' reported tokens)
    truncated          attempts whose answer was cut short (stop reason max_tokens/length)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from .estimation import smape
from .events import Event
from .pricing import usd

UNKNOWN_MODEL = "unknown"


class ModelPhaseRow(BaseModel):
    model: str
    phase: str
    runs: int
    calls: int
    successful_calls: int
    success_rate: float | None = Field(description="Percent of ended calls that succeeded.")
    attempts: int
    retries_per_call: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(description="Priced attempts' cost; None when any attempt had no price.")
    cost_per_success_usd: float | None
    unpriced_attempts: int
    truncated_attempts: int
    mean_smape: float | None = Field(description="Percent, over finished phases with a prediction.")
    smape_samples: int


class Comparison(BaseModel):
    runs: list[str]
    rows: list[ModelPhaseRow]


@dataclass
class _Acc:
    runs: set[str] = field(default_factory=set)
    ended: dict[tuple[str, int], bool] = field(default_factory=dict)  # (run, call) -> succeeded
    attempts: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nusd: int = 0
    unpriced: int = 0
    truncated: int = 0
    smapes: list[float] = field(default_factory=list)


@dataclass
class _RunPhase:
    model: str | None = None  # declared by the spec
    predicted: int | None = None
    used: int = 0
    finished: bool = False
    models: set[str] = field(default_factory=set)  # models its calls used


def compare(runs: Iterable[tuple[str, Sequence[Event]]], *, models: set[str] | None = None) -> Comparison:
    """Rows per (model, phase) over `runs` (run id, its events in seq order), optionally only
    the named models."""
    acc: dict[tuple[str, str], _Acc] = {}
    run_ids: list[str] = []
    for run_id, events in runs:
        run_ids.append(run_id)
        _fold_run(run_id, events, acc)
    rows = [_row(model, phase, a) for (model, phase), a in sorted(acc.items())]
    if models is not None:
        rows = [r for r in rows if r.model in models]
    return Comparison(runs=run_ids, rows=rows)


def _fold_run(run_id: str, events: Sequence[Event], acc: dict[tuple[str, str], _Acc]) -> None:
    phases: dict[str, _RunPhase] = {}
    for event in events:
        d: dict[str, Any] = event.data
        phase_name = d.get("phase")
        if not isinstance(phase_name, str):
            continue
        rp = phases.setdefault(phase_name, _RunPhase())
        if event.type == "phase.started":
            rp.model, rp.predicted = d.get("model"), d.get("predicted_tokens")
            continue
        if event.type == "phase.finished":
            rp.finished = d.get("state", "finished") == "finished"
            continue
        model = d.get("model") or rp.model or UNKNOWN_MODEL
        a = acc.setdefault((model, phase_name), _Acc())
        a.runs.add(run_id)
        if event.type == "call.retrying":
            a.retries += 1
        elif event.type in ("call.succeeded", "call.failed"):
            rp.models.add(model)
            _attempt(run_id, event, a, rp)
    for phase_name, rp in phases.items():
        if rp.finished and rp.predicted is not None and len(rp.models) == 1:
            acc[(next(iter(rp.models)), phase_name)].smapes.append(smape(rp.predicted, rp.used))


def _attempt(run_id: str, event: Event, a: _Acc, rp: _RunPhase) -> None:
    d = event.data
    a.attempts += 1
    duration = d.get("duration_s")
    if isinstance(duration, int | float) and math.isfinite(duration):
        a.latencies.append(float(duration))
    usage = d.get("usage")
    if isinstance(usage, dict):
        a.input_tokens += int(usage.get("input_tokens", 0))
        a.output_tokens += int(usage.get("output_tokens", 0))
        if event.type == "call.succeeded":
            rp.used += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        cost = d.get("cost_nusd")
        if isinstance(cost, int):
            a.cost_nusd += cost
        else:
            a.unpriced += 1
    if d.get("reason") == "truncated" or d.get("stop_reason") in ("max_tokens", "length"):
        a.truncated += 1
    call = (run_id, int(d.get("call", -1)))
    if event.type == "call.succeeded":
        a.ended[call] = True
    elif d.get("final"):
        a.ended[call] = False


def _row(model: str, phase: str, a: _Acc) -> ModelPhaseRow:
    calls = len(a.ended)
    ok = sum(a.ended.values())
    cost = None if a.unpriced else usd(a.cost_nusd)
    return ModelPhaseRow(
        model=model,
        phase=phase,
        runs=len(a.runs),
        calls=calls,
        successful_calls=ok,
        success_rate=100 * ok / calls if calls else None,
        attempts=a.attempts,
        retries_per_call=a.retries / calls if calls else None,
        latency_p50_s=percentile(a.latencies, 50),
        latency_p95_s=percentile(a.latencies, 95),
        input_tokens=a.input_tokens,
        output_tokens=a.output_tokens,
        cost_usd=cost,
        cost_per_success_usd=cost / ok if cost is not None and ok else None,
        unpriced_attempts=a.unpriced,
        truncated_attempts=a.truncated,
        mean_smape=statistics.fmean(a.smapes) if a.smapes else None,
        smape_samples=len(a.smapes),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)
