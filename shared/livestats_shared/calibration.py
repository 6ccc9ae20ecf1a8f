"""Calibrating the token estimator: per-stratum correction factors that minimise SMAPE.

A factor f turns a prediction P into f x P. For one stratum (samples sharing a category and a
complexity, by default) the factor is the f that minimises the mean SMAPE of f x P against the
actual A. Each sample's SMAPE is smallest at f = A / P and the mean is not convex, so the fit
evaluates every such ratio and a log-spaced grid between the smallest and largest, then refines
the best with a golden-section search between its neighbours.

Thin strata borrow: a stratum with fewer than `min_samples` samples uses its first dimension
alone (category), and with too few there as well, the pooled factor of every sample.

Honesty: the report gives the mean SMAPE before (the raw predictions) and after, both over the
same samples; "after" is leave-one-out cross-validated (each sample predicted by factors fitted
without it), so a factor that only fits noise does not look like an improvement. An improvement
is claimed only when the cross-validated SMAPE is lower AND a one-sided sign test over the
per-sample differences gives p < 0.05.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from .estimation import UNKNOWN, EstimationSample, deliverables_bucket, smape

DIMENSIONS = ("category", "complexity", "deliverables")
DEFAULT_BY: tuple[str, ...] = ("category", "complexity")
MIN_SAMPLES = 5  # per stratum before its own factor is trusted
POOLED = "*"  # the stratum key of the pooled factor
_GRID = 48
_GOLDEN = (math.sqrt(5) - 1) / 2
_SIGNIFICANCE = 0.05


class StratumFactor(BaseModel):
    model_config = ConfigDict(frozen=True)
    stratum: str = Field(description="e.g. 'category=implementation,complexity=high', '*' for pooled.")
    factor: float = Field(description="Multiply a prediction by this.")
    samples: int
    smape_before: float | None = Field(description="Mean SMAPE of the raw predictions in this stratum, percent.")
    smape_after: float | None = Field(description="Mean SMAPE after the factor, in-sample, percent.")


class Calibration(BaseModel):
    by: list[str]
    min_samples: int
    pooled: StratumFactor
    strata: list[StratumFactor] = Field(
        description="Strata with at least min_samples samples: by every dimension, then by the first alone."
    )
    samples: int
    smape_before: float | None = Field(description="Mean SMAPE of the raw predictions, percent.")
    smape_after_cv: float | None = Field(description="Leave-one-out cross-validated mean SMAPE after, percent.")
    improved: bool = Field(description="CV SMAPE lower and a one-sided sign test p < 0.05.")
    sign_test_p: float | None


class CalibratedPrediction(BaseModel):
    predicted_tokens: int
    calibrated_tokens: int
    factor: float
    stratum: str = Field(description="The stratum whose factor applied (a fallback names a coarser one).")


def stratum_value(sample: EstimationSample | dict[str, object], dimension: str) -> str:
    get = sample.get if isinstance(sample, dict) else lambda d: getattr(sample, d)
    if dimension == "deliverables":
        value = get("deliverables")
        return deliverables_bucket(value if isinstance(value, int) else None)
    value = get(dimension)
    return str(value) if value is not None else UNKNOWN


def stratum_key(sample: EstimationSample | dict[str, object], by: Sequence[str]) -> str:
    return ",".join(f"{d}={stratum_value(sample, d)}" for d in by) if by else POOLED


def mean_smape(samples: Sequence[EstimationSample], factor: float = 1.0) -> float:
    return _loss(_pairs(samples), factor)


def _pairs(samples: Sequence[EstimationSample]) -> list[tuple[float, float]]:
    return [(float(s.predicted_tokens), float(s.actual_tokens)) for s in samples]


def _loss(pairs: Sequence[tuple[float, float]], factor: float) -> float:
    """Mean SMAPE (percent) of factor x P against A; the hot loop of the fit, so plain floats."""
    total = 0.0
    for p, a in pairs:
        fp = factor * p
        if fp + a > 0:
            total += abs(fp - a) / (fp + a)
    return 200.0 * total / len(pairs)


def fit_factor(samples: Sequence[EstimationSample]) -> float:
    """The factor minimising mean SMAPE over `samples` (1.0 when nothing informs it)."""
    return _fit(_pairs(samples))


def _fit(pairs: Sequence[tuple[float, float]]) -> float:
    usable = [(p, a) for p, a in pairs if p > 0]
    ratios = sorted({a / p for p, a in usable if a > 0})
    if not ratios:
        return 1.0  # nothing predicted, or every actual is 0: no factor does better than another

    def loss(f: float) -> float:
        return _loss(usable, f)

    lo, hi = ratios[0], ratios[-1]
    grid = [lo * (hi / lo) ** (i / (_GRID - 1)) for i in range(_GRID)] if hi > lo else []
    candidates = sorted({*ratios, *grid, 1.0})
    best = min(candidates, key=loss)
    # Refine between the neighbouring candidates (the minimum may lie between two).
    i = candidates.index(best)
    return _golden(loss, candidates[max(i - 1, 0)], candidates[min(i + 1, len(candidates) - 1)], best)


def _golden(loss: Callable[[float], float], a: float, b: float, start: float) -> float:
    best, best_loss = start, loss(start)
    for _ in range(40):
        if b - a <= 1e-9 * max(1.0, b):
            break
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        if loss(c) < loss(d):
            b = d
        else:
            a = c
    mid = (a + b) / 2
    return mid if loss(mid) < best_loss else best


class _Fitted:
    """Factors per stratum with the fallback chain: full key, first dimension, pooled."""

    def __init__(self, samples: Sequence[EstimationSample], by: Sequence[str], min_samples: int) -> None:
        self.by, self.min_samples = tuple(by), min_samples
        self.pooled = fit_factor(samples)
        self.levels: list[tuple[tuple[str, ...], dict[str, tuple[float, list[EstimationSample]]]]] = []
        for dims in _levels(self.by):
            groups: dict[str, list[EstimationSample]] = {}
            for s in samples:
                groups.setdefault(stratum_key(s, dims), []).append(s)
            self.levels.append((dims, {k: (fit_factor(g), g) for k, g in groups.items() if len(g) >= min_samples}))

    def lookup(self, sample: EstimationSample | dict[str, object]) -> tuple[str, float]:
        for dims, factors in self.levels:
            key = stratum_key(sample, dims)
            if key in factors:
                return key, factors[key][0]
        return POOLED, self.pooled


def _levels(by: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [by, by[:1]] if len(by) > 1 else [by] if by else []


def calibrate(
    samples: Sequence[EstimationSample], *, by: Sequence[str] = DEFAULT_BY, min_samples: int = MIN_SAMPLES
) -> Calibration:
    """Fit factors over `samples` (test samples are left out) and cross-validate them."""
    unknown = set(by) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot stratify by {sorted(unknown)}; choose from {list(DIMENSIONS)}")
    kept = [s for s in samples if not s.is_test]
    fitted = _Fitted(kept, by, min_samples)
    strata = [
        _stratum(key, factor, group) for _, factors in fitted.levels for key, (factor, group) in sorted(factors.items())
    ]
    before, after = _cross_validate(kept, by, min_samples)
    p = _sign_test(before, after)
    before_mean = statistics.fmean(before) if before else None
    after_mean = statistics.fmean(after) if after else None
    return Calibration(
        by=list(by),
        min_samples=min_samples,
        pooled=_stratum(POOLED, fitted.pooled, kept),
        strata=strata,
        samples=len(kept),
        smape_before=before_mean,
        smape_after_cv=after_mean,
        improved=_improved(before_mean, after_mean, p),
        sign_test_p=p,
    )


def _improved(before: float | None, after: float | None, p: float | None) -> bool:
    return before is not None and after is not None and after < before and p is not None and p < _SIGNIFICANCE


def _stratum(key: str, factor: float, group: Sequence[EstimationSample]) -> StratumFactor:
    return StratumFactor(
        stratum=key,
        factor=factor,
        samples=len(group),
        smape_before=mean_smape(group) if group else None,
        smape_after=mean_smape(group, factor) if group else None,
    )


def _cross_validate(
    samples: Sequence[EstimationSample], by: Sequence[str], min_samples: int
) -> tuple[list[float], list[float]]:
    """Per sample: SMAPE of the raw prediction, and of the prediction calibrated by factors
    fitted on every other sample."""
    before, after = [], []
    for i, s in enumerate(samples):
        rest = [*samples[:i], *samples[i + 1 :]]
        if not rest:
            continue
        _, factor = _Fitted(rest, by, min_samples).lookup(s)
        before.append(smape(s.predicted_tokens, s.actual_tokens))
        after.append(smape(s.predicted_tokens * factor, s.actual_tokens))
    return before, after


def _sign_test(before: Sequence[float], after: Sequence[float]) -> float | None:
    """One-sided p-value that calibration lowers SMAPE more often than not (ties dropped)."""
    wins = sum(a < b for a, b in zip(after, before, strict=True))
    losses = sum(a > b for a, b in zip(after, before, strict=True))
    n = wins + losses
    if n == 0:
        return None
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / (1 << n)


def predict(calibration: Calibration, phase: dict[str, object], predicted_tokens: int) -> CalibratedPrediction:
    """A calibrated prediction for a described phase, from fitted (or exported) factors: the
    stratum of every dimension, else of the first, else the pooled factor."""
    factors = {s.stratum: s.factor for s in calibration.strata}
    factor, used = calibration.pooled.factor, POOLED
    for dims in _levels(tuple(calibration.by)):
        key = stratum_key(phase, dims)
        if key in factors:
            factor, used = factors[key], key
            break
    return CalibratedPrediction(
        predicted_tokens=predicted_tokens,
        calibrated_tokens=round(predicted_tokens * factor),
        factor=factor,
        stratum=used,
    )
