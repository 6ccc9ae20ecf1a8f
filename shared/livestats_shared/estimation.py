"""Token-estimation telemetry: how far each phase's predicted tokens were from what it used.

Per sample, with P the predicted and A the actual tokens:

    SMAPE          |P - A| / ((|P| + |A|) / 2) x 100, a percentage from 0 to 200. P = A = 0 is
                   defined as 0 (nothing predicted, nothing used: exact), not a division error.
    waste ratio    P / A as a plain number (2.0 = twice what was needed). Undefined (None) when
                   A = 0: such a sample has no waste ratio and is left out of the median.
    underestimated P < A.

A summary has the sample count, the mean and median SMAPE, the median waste ratio, the
underestimation rate and the success rate (both percentages, 0 to 100), and the truncated
answers among the samples' attempts; with no samples (or no defined waste ratio) the figures are
None. Reports also stratify by category, complexity and deliverable count (buckets 1-3, 4-7,
8-15, 16+); a sample without that field falls under "unknown".
Test samples (`is_test`) are listed separately and never enter a summary.

Incomplete phases (cut short by their run's timeout, cancel, stall or failure: `complete` false)
used only part of their tokens, so their SMAPE says nothing about the estimate: they are left
out by default and counted (`excluded_incomplete`); `include_incomplete` keeps them.
Coverage gaps: against the strata the operator declares (`DeclaredStrata`), every declared
stratum with fewer than `min_samples` samples is listed with its count.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .events import Complexity, Outcome
from .stats import RunSnapshot

_TERMINAL = frozenset(o.value for o in Outcome)
UNKNOWN = "unknown"  # the group of samples that lack the field a report stratifies by
_BUCKETS = ((3, "1-3"), (7, "4-7"), (15, "8-15"))  # (largest count, label); beyond: "16+"
_COMPLEXITY_ORDER = ("low", "medium", "high", "maintenance", UNKNOWN)


class EstimationSample(BaseModel):
    """One phase's prediction and outcome: a line of `livestats report --estimation FILE`."""

    # strict: "12" is not a token count and 1 is not a boolean; unknown fields are typos.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    phase_id: str = Field(min_length=1)
    category: str | None = None
    complexity: Complexity | None = None
    deliverables: int | None = Field(None, ge=1)
    predicted_tokens: int = Field(ge=0)
    actual_tokens: int = Field(ge=0)
    success: bool
    is_test: bool = False
    # The phase ran to its end (v2 reports leave incomplete phases out unless asked); samples
    # written before this field existed were all reported as complete.
    complete: bool = True
    truncated: int = Field(0, ge=0)  # attempts whose answer was cut short (stop reason max_tokens)


class SampleResult(BaseModel):
    phase_id: str
    smape: float = Field(description="Percent, 0 to 200.")
    waste_ratio: float | None = Field(description="Predicted / actual; null when actual is 0.")
    underestimated: bool


class Summary(BaseModel):
    count: int
    mean_smape: float | None = Field(description="Percent.")
    median_smape: float | None = Field(None, description="Percent.")
    median_waste_ratio: float | None = Field(description="Over the samples whose waste ratio is defined.")
    underestimation_rate: float | None = Field(description="Percent of samples with predicted < actual.")
    success_rate: float | None = Field(description="Percent of samples that succeeded.")
    truncated: int = Field(0, description="Truncated attempts (stop reason max_tokens) in these samples' phases.")


class CoverageGap(BaseModel):
    dimension: str = Field(description="category, complexity or deliverables.")
    stratum: str
    samples: int = Field(description="Samples in this stratum (fewer than the report's min_samples).")


class DeclaredStrata(BaseModel):
    """The strata the operator wants covered (LIVESTATS_ESTIMATION_STRATA, JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    category: list[str] = []
    complexity: list[str] = ["low", "medium", "high", "maintenance"]
    deliverables: list[str] = ["1-3", "4-7", "8-15", "16+"]
    min_samples: int = Field(3, ge=1)


class EstimationReport(BaseModel):
    samples: list[SampleResult] = Field(description="Every sample that is not a test sample, in input order.")
    summary: Summary
    by_category: dict[str, Summary]
    by_complexity: dict[str, Summary]
    by_deliverables: dict[str, Summary] = Field(description="Keys 1-3, 4-7, 8-15, 16+, unknown.")
    test_samples: list[SampleResult] = Field(description="Samples flagged is_test: not in any summary.")
    excluded_incomplete: int = Field(0, description="Incomplete phases left out (include_incomplete keeps them).")
    gaps: list[CoverageGap] = Field([], description="Declared strata with fewer than min_samples samples.")


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based line number in the input
    message: str


def smape(predicted: float, actual: float) -> float:
    if predicted == actual == 0:
        return 0.0
    return abs(predicted - actual) / ((abs(predicted) + abs(actual)) / 2) * 100


def waste_ratio(predicted: int, actual: int) -> float | None:
    return None if actual == 0 else predicted / actual


def deliverables_bucket(deliverables: int | None) -> str:
    if deliverables is None:
        return UNKNOWN
    for largest, label in _BUCKETS:
        if deliverables <= largest:
            return label
    return "16+"


def evaluate(sample: EstimationSample) -> SampleResult:
    p, a = sample.predicted_tokens, sample.actual_tokens
    return SampleResult(
        phase_id=sample.phase_id, smape=smape(p, a), waste_ratio=waste_ratio(p, a), underestimated=p < a
    )


def summarize(samples: list[EstimationSample]) -> Summary:
    """The summary of `samples` exactly as given (callers leave test samples out)."""
    if not samples:
        return Summary(count=0, mean_smape=None, median_waste_ratio=None, underestimation_rate=None, success_rate=None)
    results = [evaluate(s) for s in samples]
    ratios = [r.waste_ratio for r in results if r.waste_ratio is not None]
    n = len(samples)
    return Summary(
        count=n,
        mean_smape=statistics.fmean(r.smape for r in results),
        median_smape=statistics.median(r.smape for r in results),
        truncated=sum(s.truncated for s in samples),
        median_waste_ratio=statistics.median(ratios) if ratios else None,
        underestimation_rate=100 * sum(r.underestimated for r in results) / n,
        success_rate=100 * sum(s.success for s in samples) / n,
    )


def build_report(
    samples: Iterable[EstimationSample],
    *,
    include_incomplete: bool = False,
    declared: DeclaredStrata | None = None,
) -> EstimationReport:
    all_samples = list(samples)
    incomplete = [s for s in all_samples if not s.complete and not s.is_test]
    if not include_incomplete:
        all_samples = [s for s in all_samples if s.complete or s.is_test]
    kept = [s for s in all_samples if not s.is_test]
    return EstimationReport(
        excluded_incomplete=0 if include_incomplete else len(incomplete),
        gaps=coverage_gaps(kept, declared) if declared is not None else [],
        samples=[evaluate(s) for s in kept],
        summary=summarize(kept),
        by_category=_by(kept, lambda s: s.category or UNKNOWN, order=None),
        by_complexity=_by(kept, lambda s: s.complexity or UNKNOWN, order=_COMPLEXITY_ORDER),
        by_deliverables=_by(
            kept, lambda s: deliverables_bucket(s.deliverables), order=(*(b for _, b in _BUCKETS), "16+", UNKNOWN)
        ),
        test_samples=[evaluate(s) for s in all_samples if s.is_test],
    )


def coverage_gaps(samples: list[EstimationSample], declared: DeclaredStrata) -> list[CoverageGap]:
    """Every declared stratum with fewer than `declared.min_samples` samples, in declared order."""
    keys: dict[str, Callable[[EstimationSample], str]] = {
        "category": lambda s: s.category or UNKNOWN,
        "complexity": lambda s: s.complexity or UNKNOWN,
        "deliverables": lambda s: deliverables_bucket(s.deliverables),
    }
    gaps = []
    for dimension, key in keys.items():
        counts: dict[str, int] = {}
        for sample in samples:
            counts[key(sample)] = counts.get(key(sample), 0) + 1
        for stratum in getattr(declared, dimension):
            if counts.get(stratum, 0) < declared.min_samples:
                gaps.append(CoverageGap(dimension=dimension, stratum=stratum, samples=counts.get(stratum, 0)))
    return gaps


def _by(
    samples: list[EstimationSample], key: Callable[[EstimationSample], str], *, order: tuple[str, ...] | None
) -> dict[str, Summary]:
    """Summaries of the groups that have samples: in `order`, or by name with "unknown" last."""
    groups: dict[str, list[EstimationSample]] = {}
    for sample in samples:
        groups.setdefault(key(sample), []).append(sample)
    rank = {name: i for i, name in enumerate(order or ())}
    names = sorted(groups, key=lambda g: (rank.get(g, len(rank)), g == UNKNOWN, g))
    return {name: summarize(groups[name]) for name in names}


def parse_samples(lines: Iterable[bytes | str]) -> tuple[list[EstimationSample], list[LineError]]:
    """Samples from NDJSON lines. Blank lines are skipped; a malformed line is returned as a
    LineError with its number and what is wrong with it, and the reading goes on."""
    samples: list[EstimationSample] = []
    errors: list[LineError] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(LineError(number, f"not JSON: {exc}"))
            continue
        if not isinstance(doc, dict):
            errors.append(LineError(number, f"not a JSON object but {type(doc).__name__}"))
            continue
        try:
            samples.append(EstimationSample.model_validate(doc))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors())
            errors.append(LineError(number, problems))
    return samples, errors


def run_samples(snapshot: RunSnapshot) -> list[EstimationSample]:
    """A run's samples, one per phase that has a prediction and has ended: finished (complete;
    a success when no call failed for good), or cut short by the end of its run (a final state
    other than finished, or left running by a run that is over: incomplete, a failure, with the
    tokens used until then). Phases still running or never started are not samples yet.
    `phase_id` is `<run id>/<phase name>`."""
    over = snapshot.status in _TERMINAL
    samples = []
    for phase in snapshot.phases:
        ended = phase.state is not None and (phase.state != "running" or over)
        if phase.predicted_tokens is None or not ended:
            continue
        samples.append(
            EstimationSample(
                phase_id=f"{snapshot.run_id}/{phase.name}",
                category=phase.category,
                complexity=phase.complexity,
                deliverables=phase.deliverables,
                predicted_tokens=phase.predicted_tokens,
                actual_tokens=phase.used_tokens,
                success=phase.state == "finished" and phase.given_up == 0,
                is_test=phase.is_test,
                complete=phase.state == "finished",
                truncated=phase.truncated,
            )
        )
    return samples
