"""`livestats report --estimation FILE.ndjson [--json]`: how good past token predictions were.

Reads one sample per line (see livestats_shared.estimation.EstimationSample; `-` reads stdin).
Malformed lines are reported on stderr with their line number and skipped; the report covers
the rest and the exit code stays 0. An unreadable file is exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from livestats_shared.estimation import EstimationReport, Summary, build_report, parse_samples

from . import analysis
from .exit_codes import EXIT_BAD_INPUT, EXIT_OK


def add_parser(sub: Any) -> None:  # argparse's _SubParsersAction is private
    s = sub.add_parser("report", help="estimation accuracy, model comparison and cost, calibration of past runs")
    s.add_argument("--estimation", metavar="FILE", help="NDJSON samples, one per line (- for stdin)")
    s.add_argument("--json", action="store_true", help="print the report as one JSON object")
    analysis.add_arguments(s)


def run(args: argparse.Namespace) -> int:
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
