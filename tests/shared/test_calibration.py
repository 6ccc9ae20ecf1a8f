"""Calibration: recovers known per-stratum bias, and does not claim to improve on noise."""

from __future__ import annotations

import random

import pytest
from livestats_shared.calibration import POOLED, calibrate, fit_factor, predict
from livestats_shared.estimation import EstimationSample

BIAS = {("implementation", "high"): 1.6, ("implementation", "low"): 0.8, ("testing", "medium"): 1.25}


def _sample(i: int, category: str, complexity: str, predicted: int, actual: int) -> EstimationSample:
    return EstimationSample(
        phase_id=f"r{i}/p",
        category=category,
        complexity=complexity,  # type: ignore[arg-type]
        predicted_tokens=predicted,
        actual_tokens=actual,
        success=True,
    )


def _biased(seed: int, per_stratum: int = 30, noise: float = 0.08) -> list[EstimationSample]:
    rng = random.Random(seed)
    samples: list[EstimationSample] = []
    for (category, complexity), bias in BIAS.items():
        for _ in range(per_stratum):
            predicted = rng.randint(500, 20_000)
            actual = round(predicted * bias * rng.lognormvariate(0, noise))
            samples.append(_sample(len(samples), category, complexity, predicted, actual))
    return samples


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_known_per_stratum_bias_is_recovered_within_5_percent(seed):
    calibration = calibrate(_biased(seed))
    factors = {s.stratum: s.factor for s in calibration.strata}
    for (category, complexity), bias in BIAS.items():
        factor = factors[f"category={category},complexity={complexity}"]
        assert factor == pytest.approx(bias, rel=0.05)
    assert calibration.smape_after_cv is not None and calibration.smape_before is not None
    assert calibration.smape_after_cv < calibration.smape_before / 2
    assert calibration.improved and calibration.sign_test_p is not None and calibration.sign_test_p < 0.05


@pytest.mark.parametrize("seed", [4, 5, 6, 7])
def test_pure_noise_is_not_claimed_as_an_improvement(seed):
    rng = random.Random(seed)
    samples = []
    for i in range(80):
        predicted = rng.randint(500, 20_000)
        actual = round(predicted * rng.lognormvariate(0, 0.5))  # unbiased: median ratio 1
        category, complexity = rng.choice(list(BIAS))
        samples.append(_sample(i, category, complexity, predicted, actual))
    calibration = calibrate(samples)
    assert not calibration.improved, calibration


def test_a_thin_stratum_borrows_from_its_category_then_the_pool():
    samples = _biased(8, per_stratum=30)
    samples.append(_sample(999, "docs", "low", 1_000, 3_000))  # one sample: below min_samples
    calibration = calibrate(samples, min_samples=5)
    keys = {s.stratum for s in calibration.strata}
    assert "category=docs,complexity=low" not in keys and "category=docs" not in keys
    thin = predict(calibration, {"category": "docs", "complexity": "low"}, 1_000)
    assert thin.stratum == POOLED and thin.factor == calibration.pooled.factor
    # implementation/medium has no samples, but its category has 60: the category's factor.
    coarse = predict(calibration, {"category": "implementation", "complexity": "medium"}, 1_000)
    assert coarse.stratum == "category=implementation"
    exact = predict(calibration, {"category": "testing", "complexity": "medium"}, 1_000)
    assert exact.stratum == "category=testing,complexity=medium"
    assert exact.calibrated_tokens == round(1_000 * exact.factor)


def test_the_fit_minimises_mean_smape_against_a_brute_force_search():
    rng = random.Random(9)
    samples = [_sample(i, "x", "low", rng.randint(100, 5_000), rng.randint(100, 9_000)) for i in range(25)]
    from livestats_shared.calibration import mean_smape

    fitted = fit_factor(samples)
    brute = min((0.05 + i * 0.001 for i in range(5_000)), key=lambda f: mean_smape(samples, f))
    assert mean_smape(samples, fitted) <= mean_smape(samples, brute) + 1e-6


def test_nothing_to_fit_keeps_predictions_as_they_are():
    assert fit_factor([]) == 1.0
    assert fit_factor([_sample(0, "x", "low", 0, 10)]) == 1.0
    assert fit_factor([_sample(0, "x", "low", 10, 0)]) == 1.0
    with pytest.raises(ValueError, match="cannot stratify"):
        calibrate([], by=("colour",))
