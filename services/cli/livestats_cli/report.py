"""`livestats report [RUN_ID...] [--status S] [--limit N] | --estimation FILE.ndjson [--json]`:
how good past token predictions were, over runs (read from Redis, or a gateway with `--gateway`)
or over a samples file (as `livestats export --estimation` writes).

Reads one sample per line (see livestats_shared.estimation.EstimationSample; `-` reads stdin).
Malformed lines are reported on stderr with their line number and skipped; the report covers
the rest and the exit code stays 0. An unreadable file is exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from livestats_shared.control import UnknownRun
from livestats_shared.estimation import (
    EstimationReport,
    EstimationSample,
    Summary,
    build_report,
    parse_samples,
    run_samples,
)
from livestats_shared.history import read_snapshot
from livestats_shared.ids import RunId, validate_run_id
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_BAD_INPUT, EXIT_OK
from .runs import STATUSES, latest_runs, positive


def add_parser(sub: Any) -> None:  # argparse's _SubParsersAction is private
    s = sub.add_parser(
        "report",
        help="estimation accuracy (SMAPE, waste ratio) of runs (by id, or the latest) or of a samples file",
    )
    s.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="these runs (default: the latest, see --limit)")
    s.add_argument("--estimation", metavar="FILE", help="NDJSON samples, one per line (- for stdin), instead of runs")
    s.add_argument("--status", action="append", choices=STATUSES, help="only runs in this status (repeatable)")
    s.add_argument("--limit", type=positive, default=50, help="the latest this many runs (default 50)")
    s.add_argument("--json", action="store_true", help="print the report as one JSON object")


# Samples of the given runs, or (no ids) of the latest `limit` runs in `statuses` (all if empty).
SampleSource = Callable[[list[RunId], list[str], int], Awaitable[list[EstimationSample]]]


async def run_on_redis(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    async def samples(run_ids: list[RunId], statuses: list[str], limit: int) -> list[EstimationSample]:
        snapshots: list[RunSnapshot] = []
        if run_ids:
            for run_id in run_ids:
                snap = await read_snapshot(redis, run_id)
                if snap is None:
                    raise UnknownRun(run_id)
                snapshots.append(snap)
        else:
            snapshots = await latest_runs(redis, limit=limit, statuses=set(statuses))
        return [sample for snap in snapshots for sample in run_samples(snap)]

    return await run_on_runs(samples, args)


async def run_on_runs(source: SampleSource, args: argparse.Namespace) -> int:
    """The report over runs (their ended phases with a prediction), read from Redis or a gateway."""
    run_ids = [validate_run_id(r) for r in args.run_ids]
    samples = await source(run_ids, args.status or [], args.limit)
    report = build_report(samples)
    print(report.model_dump_json() if args.json else format_report(report))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """The report over a samples file (`--estimation FILE`); no Redis."""
    try:
        if args.estimation == "-":
            lines = sys.stdin.buffer.read().splitlines()
        else:
            with open(args.estimation, "rb") as f:
                lines = f.read().splitlines()
    except OSError as exc:
        print(f"error: cannot read {args.estimation}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    samples, errors = parse_samples(lines)
    for error in errors:
        print(f"warning: {args.estimation}:{error.line}: skipped: {error.message}", file=sys.stderr)
    report = build_report(samples)
    print(report.model_dump_json() if args.json else format_report(report, skipped=len(errors)))
    return EXIT_OK


def format_report(report: EstimationReport, *, skipped: int = 0) -> str:
    """The report as an aligned table: one row per group."""
    rows: list[tuple[str, Summary]] = [("all samples", report.summary)]
    for title, groups in (
        ("category", report.by_category),
        ("complexity", report.by_complexity),
        ("deliverables", report.by_deliverables),
    ):
        rows += [(f"{title}: {name}", summary) for name, summary in groups.items()]
    width = max(len(name) for name, _ in rows)
    head = f"{'':<{width}}  {'count':>5}  {'mean SMAPE':>10}  {'median waste':>12}  {'under':>7}  {'success':>7}"
    lines = [head]
    for name, s in rows:
        lines.append(
            f"{name:<{width}}  {s.count:>5}  {_pct(s.mean_smape):>10}  {_num(s.median_waste_ratio):>12}  "
            f"{_pct(s.underestimation_rate):>7}  {_pct(s.success_rate):>7}"
        )
    notes = [f"{len(report.test_samples)} test samples left out"] if report.test_samples else []
    if skipped:
        notes.append(f"{skipped} malformed lines skipped")
    return "\n".join(lines + ([", ".join(notes)] if notes else []))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
