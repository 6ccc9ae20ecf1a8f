"""`livestats report --models | --calibrate | --runs`: cost and model comparison, estimator
calibration and the estimation report, over runs (not files).

Through a gateway (`--gateway`/LIVESTATS_GATEWAY_URL, with a token) the figures come from its
REST API and cover the runs the token may see; otherwise straight from Redis (an operator's
view: every run). Both use the same shared functions, so the figures agree.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from livestats_shared.calibration import DEFAULT_BY, DIMENSIONS, MIN_SAMPLES, Calibration, calibrate
from livestats_shared.comparison import Comparison, ModelPhaseRow, compare
from livestats_shared.errors import InvalidEvent
from livestats_shared.estimation import EstimationReport, build_report, run_samples
from livestats_shared.events import Event
from livestats_shared.history import iter_events, read_snapshot
from livestats_shared.ids import validate_run_id
from livestats_shared.selection import RunFilter
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_NOT_FOUND, EXIT_OK
from .gateway_client import GatewayClient
from .runs import latest_runs

SCAN_MAX = 5_000  # newest runs examined when filtering straight on Redis


def add_arguments(s: argparse.ArgumentParser) -> None:
    what = s.add_argument_group("over runs (instead of --estimation FILE)")
    what.add_argument("--models", action="store_true", help="compare models per phase: success, latency, tokens, cost")
    what.add_argument("--calibrate", action="store_true", help="fit the estimator's correction factors per stratum")
    what.add_argument("--runs", action="store_true", help="the estimation report over runs")
    pick = s.add_argument_group("which runs (newest first; every condition must hold)")
    pick.add_argument("--run", action="append", metavar="ID", help="this run (repeatable); else the filters below")
    pick.add_argument("--since", type=int, metavar="MS", help="created at or after (epoch ms)")
    pick.add_argument("--until", type=int, metavar="MS", help="created before (epoch ms)")
    pick.add_argument("--owner", help="submitted by this principal")
    pick.add_argument("--name", help="name contains this (case-insensitive)")
    pick.add_argument("--tag", help="carries this tag")
    pick.add_argument("--model", action="append", help="--models: only this model (repeatable)")
    pick.add_argument("--limit", type=int, default=200, help="at most this many runs (default 200)")
    how = s.add_argument_group("calibration and estimation")
    how.add_argument("--by", default=",".join(DEFAULT_BY), help=f"strata, from {','.join(DIMENSIONS)}")
    how.add_argument("--min-samples", type=int, default=MIN_SAMPLES, help="samples a stratum needs for its factor")
    how.add_argument("--include-incomplete", action="store_true", help="keep phases cut short by their run's end")
    how.add_argument("--out", metavar="FILE", help="--calibrate: also write the factors as JSON here")


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.models or args.calibrate or args.runs)


def _filter(args: argparse.Namespace) -> RunFilter:
    return RunFilter(since=args.since, until=args.until, owner=args.owner, name=args.name, tag=args.tag)


def _by(args: argparse.Namespace) -> tuple[str, ...]:
    by = tuple(d for d in args.by.split(",") if d)
    if not by or any(d not in DIMENSIONS for d in by) or len(set(by)) != len(by):
        raise ValueError(f"--by takes distinct dimensions of {','.join(DIMENSIONS)}, not {args.by!r}")
    return by


async def on_redis(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    runs = await _runs_on_redis(redis, args)
    if runs is None:
        return EXIT_NOT_FOUND
    if args.models:
        per_run: list[tuple[str, list[Event]]] = [(r.run_id, await _valid_events(redis, r.run_id)) for r in runs]
        comparison = compare(per_run, models=set(args.model) if args.model else None)
        return _show_models(comparison, len(runs), args)
    samples = [s for r in runs for s in run_samples(r)]
    if args.calibrate:
        complete = [s for s in samples if s.complete]
        return _show_calibration(calibrate(complete, by=_by(args), min_samples=args.min_samples), len(runs), args)
    return _show_estimation(build_report(samples, include_incomplete=args.include_incomplete), args)


async def _valid_events(redis: Redis, run_id: str) -> list[Event]:
    """The run's events; an entry that is not a livestats event is reported and left out."""

    def skip(exc: InvalidEvent) -> None:
        print(f"warning: run {run_id}: skipped an entry: {exc}", file=sys.stderr)

    return [e async for e in iter_events(redis, run_id, on_invalid=skip)]


async def _runs_on_redis(redis: Redis, args: argparse.Namespace) -> list[RunSnapshot] | None:
    if args.run:
        chosen = []
        for run_id in args.run:
            snap = await read_snapshot(redis, validate_run_id(run_id))
            if snap is None:
                print(f"error: no run {run_id}", file=sys.stderr)
                return None
            chosen.append(snap)
        return chosen
    run_filter = _filter(args)
    scanned = await latest_runs(redis, limit=SCAN_MAX, statuses=set())
    return [r for r in scanned if run_filter.accepts(_stats_view(r))][: args.limit]


def _stats_view(snap: RunSnapshot) -> dict[str, str]:
    """The stats-hash fields RunFilter reads, from a snapshot."""
    view = {"name": snap.name, "tags": orjson.dumps(snap.tags).decode()}
    if snap.created_ts is not None:
        view["created_ts"] = str(snap.created_ts)
    if snap.owner is not None:
        view["owner"] = snap.owner
    return view


async def through_gateway(gateway: GatewayClient, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {k: v for k, v in _filter(args).model_dump().items() if v is not None}
    params["limit"] = args.limit
    if args.models:
        answer = await gateway.call(
            "GET", "/api/compare", params={**params, "run": args.run or [], "model": args.model or []}
        )
        return _show_models(Comparison.model_validate(answer), answer["selection"]["runs_examined"], args)
    if args.calibrate:
        by = list(_by(args))
        answer = await gateway.call(
            "GET", "/api/calibration", params={**params, "by": by, "min_samples": args.min_samples}
        )
        return _show_calibration(Calibration.model_validate(answer), answer["selection"]["runs_examined"], args)
    answer = await gateway.call(
        "GET",
        "/api/estimation",
        params={"limit": args.limit, "since": args.since, "include_incomplete": args.include_incomplete},
    )
    return _show_estimation(EstimationReport.model_validate(answer), args)


def _show_models(comparison: Comparison, runs: int, args: argparse.Namespace) -> int:
    if args.json:
        print(comparison.model_dump_json())
        return EXIT_OK
    heads = (
        "model",
        "phase",
        "runs",
        "calls",
        "success",
        "retries/call",
        "p50 s",
        "p95 s",
        "tokens in",
        "tokens out",
        "cost/success",
        "SMAPE",
        "truncated",
    )
    rows = [_model_row(r) for r in comparison.rows]
    print(_table(heads, rows) if rows else "no calls in the chosen runs")
    print(f"{runs} runs compared")
    return EXIT_OK


def _model_row(r: ModelPhaseRow) -> tuple[str, ...]:
    cost = "unknown" if r.cost_per_success_usd is None else f"${r.cost_per_success_usd:.6f}"
    if r.unpriced_attempts:
        cost += f" ({r.unpriced_attempts} unpriced)"
    return (
        r.model,
        r.phase,
        str(r.runs),
        str(r.calls),
        _pct(r.success_rate),
        _num(r.retries_per_call, 2),
        _num(r.latency_p50_s, 2),
        _num(r.latency_p95_s, 2),
        f"{r.input_tokens:,}",
        f"{r.output_tokens:,}",
        cost,
        _pct(r.mean_smape),
        str(r.truncated_attempts),
    )


def _show_calibration(result: Calibration, runs: int, args: argparse.Namespace) -> int:
    if args.out:
        with open(args.out, "wb") as f:
            f.write(orjson.dumps(result.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n")
    if args.json:
        print(result.model_dump_json())
        return EXIT_OK
    rows = [
        (s.stratum, str(s.samples), f"{s.factor:.3f}", _pct(s.smape_before), _pct(s.smape_after))
        for s in [*result.strata, result.pooled]
    ]
    print(_table(("stratum", "samples", "factor", "SMAPE raw", "SMAPE after"), rows))
    verdict = "a real improvement" if result.improved else "no significant improvement"
    p = "" if result.sign_test_p is None else f", sign test p = {result.sign_test_p:.2g}"
    print(
        f"{result.samples} samples from {runs} runs: SMAPE {_pct(result.smape_before)} raw, "
        f"{_pct(result.smape_after_cv)} calibrated (leave-one-out): {verdict}{p}"
    )
    return EXIT_OK


def _show_estimation(report: EstimationReport, args: argparse.Namespace) -> int:
    from .report import format_report  # the file report's table, shared

    print(report.model_dump_json() if args.json else format_report(report))
    if not args.json and report.excluded_incomplete:
        print(f"{report.excluded_incomplete} incomplete phases left out (--include-incomplete keeps them)")
    return EXIT_OK


def _table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns: the first two (names) to the left, figures to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(heads), *(line(r) for r in rows)])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
