"""Estimation math checked against figures computed by hand (in the comments), not by the code."""

from __future__ import annotations

import orjson
import pytest
from livestats_shared.estimation import (
    DeclaredStrata,
    EstimationSample,
    build_report,
    deliverables_bucket,
    parse_samples,
    run_samples,
    smape,
    summarize,
    waste_ratio,
)
from livestats_shared.events import (
    CallStarted,
    CallSucceeded,
    Event,
    Outcome,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunFinished,
    RunQueued,
    TokenUsage,
)
from livestats_shared.stats import RunSnapshot, fold


@pytest.mark.parametrize(
    ("p", "a", "expected_smape", "expected_ratio"),
    [
        (100, 80, 100 * 20 / 90, 1.25),  # |20| / 90 -> 22.22 %; 100 / 80
        (100, 150, 40.0, 100 / 150),  # 50 / 125 -> 40 %
        (300, 100, 100.0, 3.0),  # 200 / 200 -> 100 %
        (0, 0, 0.0, None),  # defined: exact; no ratio without actual tokens
        (50, 0, 200.0, None),  # 50 / 25 -> 200 %; ratio undefined
        (0, 40, 200.0, 0.0),  # 40 / 20 -> 200 %; nothing predicted: ratio 0
        (7, 7, 0.0, 1.0),
    ],
)
def test_smape_and_waste_ratio_of_one_sample(p, a, expected_smape, expected_ratio):
    assert smape(p, a) == pytest.approx(expected_smape)
    if expected_ratio is None:
        assert waste_ratio(p, a) is None
    else:
        assert waste_ratio(p, a) == pytest.approx(expected_ratio)


@pytest.mark.parametrize(
    ("n", "bucket"),
    [
        (1, "1-3"),
        (3, "1-3"),
        (4, "4-7"),
        (7, "4-7"),
        (8, "8-15"),
        (15, "8-15"),
        (16, "16+"),
        (500, "16+"),
        (None, "unknown"),
    ],
)
def test_deliverable_buckets_have_the_documented_edges(n, bucket):
    assert deliverables_bucket(n) == bucket


def sample(phase_id, category, complexity, deliverables, p, a, success, is_test=False):
    return EstimationSample(
        phase_id=phase_id,
        category=category,
        complexity=complexity,
        deliverables=deliverables,
        predicted_tokens=p,
        actual_tokens=a,
        success=success,
        is_test=is_test,
    )


TABLE = [
    #       id   category          complexity    deliv  P    A     ok      SMAPE %   ratio  under
    sample("a", "implementation", "medium", 2, 100, 80, True),  # 22.222   1.25   no
    sample("b", "implementation", "high", 5, 100, 150, False),  # 40.0     0.667  yes
    sample("c", "testing", "low", 10, 0, 0, True),  #              0.0      -      no
    sample("d", "documentation", "low", 20, 50, 0, True),  #     200.0    -      no
    sample("e", "refactoring", "maintenance", None, 300, 100, True),  # 100.0  3.0  no
    sample("t", "implementation", "high", 5, 1, 1000, False, is_test=True),  # excluded
]


def test_report_summaries_match_the_hand_computed_table():
    report = build_report(TABLE).model_dump()

    # The test sample is listed apart and counts nowhere else.
    assert [s["phase_id"] for s in report["samples"]] == ["a", "b", "c", "d", "e"]
    assert [s["phase_id"] for s in report["test_samples"]] == ["t"]
    assert report["samples"][1]["underestimated"] and not report["samples"][0]["underestimated"]
    assert report["samples"][2]["waste_ratio"] is None and report["samples"][2]["smape"] == 0.0

    s = report["summary"]
    assert s["count"] == 5
    # (200/9 + 40 + 0 + 200 + 100) / 5 = 3260 / 45
    assert s["mean_smape"] == pytest.approx(3260 / 45)
    # defined ratios 0.667, 1.25, 3.0 (c and d have no actual tokens): median 1.25
    assert s["median_waste_ratio"] == pytest.approx(1.25)
    assert s["underestimation_rate"] == pytest.approx(20.0)  # b only: 1 of 5
    assert s["success_rate"] == pytest.approx(80.0)  # all but b

    impl = report["by_category"]["implementation"]
    # a and b: SMAPE (200/9 + 40) / 2 = 560 / 18; ratios 1.25 and 2/3: median 23/24
    assert (impl["count"], impl["underestimation_rate"], impl["success_rate"]) == (2, 50.0, 50.0)
    assert impl["mean_smape"] == pytest.approx(560 / 18)
    assert impl["median_waste_ratio"] == pytest.approx(23 / 24)
    assert list(report["by_category"]) == ["documentation", "implementation", "refactoring", "testing"]
    docs = report["by_category"]["documentation"]
    assert (docs["count"], docs["mean_smape"], docs["median_waste_ratio"]) == (1, 200.0, None)

    assert list(report["by_complexity"]) == ["low", "medium", "high", "maintenance"]
    low = report["by_complexity"]["low"]  # c and d: SMAPE (0 + 200) / 2, no defined ratio
    assert (low["count"], low["mean_smape"], low["median_waste_ratio"], low["success_rate"]) == (2, 100.0, None, 100.0)
    assert report["by_complexity"]["high"]["count"] == 1  # b; t is a test sample

    assert list(report["by_deliverables"]) == ["1-3", "4-7", "8-15", "16+", "unknown"]
    assert [g["count"] for g in report["by_deliverables"].values()] == [1, 1, 1, 1, 1]
    assert report["by_deliverables"]["unknown"]["mean_smape"] == pytest.approx(100.0)  # e


def test_an_empty_summary_has_no_figures_rather_than_a_division_error():
    empty = summarize([])
    assert empty.model_dump() == {
        "count": 0,
        "mean_smape": None,
        "median_smape": None,
        "truncated": 0,
        "median_waste_ratio": None,
        "underestimation_rate": None,
        "success_rate": None,
    }
    only_tests = build_report([TABLE[-1]])
    assert only_tests.summary.count == 0 and only_tests.by_category == {} and len(only_tests.test_samples) == 1


def line(**fields) -> bytes:
    base = {
        "phase_id": "p",
        "category": "testing",
        "complexity": "low",
        "deliverables": 3,
        "predicted_tokens": 10,
        "actual_tokens": 20,
        "success": True,
    }
    return orjson.dumps({**base, **fields})


def test_malformed_lines_are_reported_with_their_number_and_skipped():
    lines = [
        line(phase_id="ok-1"),
        b"not json at all",
        b"",  # blank lines are not samples and not errors
        b"[1, 2]",
        line(predicted_tokens="12"),
        line(success=1),
        line(deliverables=0),
        line(complexity="huge"),
        line(colour="blue"),
        orjson.dumps({"phase_id": "no-numbers", "success": True}),
        line(phase_id="ok-2", category=None, complexity=None, deliverables=None, is_test=True),
    ]
    samples, errors = parse_samples(lines)
    assert [s.phase_id for s in samples] == ["ok-1", "ok-2"]
    assert samples[1].is_test and samples[1].deliverables is None
    by_line = {e.line: e.message for e in errors}
    assert sorted(by_line) == [2, 4, 5, 6, 7, 8, 9, 10]
    assert by_line[2].startswith("not JSON")
    assert "not a JSON object" in by_line[4]
    assert by_line[5].startswith("predicted_tokens:")
    assert by_line[6].startswith("success:")
    assert by_line[7].startswith("deliverables:")
    assert by_line[8].startswith("complexity:")
    assert by_line[9].startswith("colour:")
    assert "predicted_tokens" in by_line[10] and "actual_tokens" in by_line[10]


def _events(*payloads) -> list[Event]:
    return [
        Event(type=p.TYPE, run_id="r1", seq=i, ts=1000 + i, data=p.model_dump(mode="json"))
        for i, p in enumerate(payloads, start=1)
    ]


def test_a_runs_samples_come_from_its_snapshot_ended_phases_only():
    plan = [
        PhasePlan(
            name="gen", calls=2, category="implementation", complexity="high", deliverables=4, predicted_tokens=200
        ),
        PhasePlan(name="cmp", calls=1, category="testing", predicted_tokens=50, is_test=True),
        PhasePlan(name="eval", calls=1),  # no prediction: never a sample
    ]
    used = [TokenUsage(input_tokens=10, output_tokens=60), TokenUsage(input_tokens=20, output_tokens=90)]
    events = _events(
        RunQueued(name="r", planned_calls=4, phases=plan, timeout_s=60),
        PhaseStarted(phase="gen", index=0, calls=2, concurrency=2),
        CallStarted(phase="gen", call=0, attempt=1),
        CallSucceeded(phase="gen", call=0, attempt=1, duration_s=0.1, bytes=9, usage=used[0]),
        CallStarted(phase="gen", call=1, attempt=1),
        CallSucceeded(phase="gen", call=1, attempt=1, duration_s=0.1, bytes=9, usage=used[1]),
        PhaseFinished(phase="gen", index=0, succeeded=2, given_up=0, duration_s=1, actual_tokens=180),
        PhaseStarted(phase="cmp", index=1, calls=1, concurrency=1),
    )
    running = RunSnapshot.from_hash("r1", fold(events))
    # gen used 70 + 110 = 180 tokens; cmp is still running: not a sample yet
    assert [s.model_dump() for s in run_samples(running)] == [
        {
            "phase_id": "r1/gen",
            "category": "implementation",
            "complexity": "high",
            "deliverables": 4,
            "predicted_tokens": 200,
            "actual_tokens": 180,
            "success": True,
            "is_test": False,
            "complete": True,
            "truncated": 0,
        }
    ]
    cancelled = _events(RunFinished(outcome=Outcome.CANCELLED, reason="cancel_requested"))
    over = RunSnapshot.from_hash("r1", fold([*events, *cancelled]))
    interrupted = run_samples(over)[1]
    assert (interrupted.phase_id, interrupted.success, interrupted.is_test) == ("r1/cmp", False, True)
    assert not interrupted.complete  # cut short by the cancel: left out of reports by default
    assert interrupted.actual_tokens == 0


def test_a_phase_without_call_events_is_a_sample_with_the_tokens_its_phase_finished_states():
    # What an external producer (a shell orchestrator) sends: phase events, no calls.
    events = _events(
        RunQueued(name="sh", planned_calls=0, phases=[PhasePlan(name="refactor", calls=0)], timeout_s=60),
        PhaseStarted(phase="refactor", index=0, calls=0, concurrency=1, category="refactoring", predicted_tokens=900),
        PhaseFinished(phase="refactor", index=0, succeeded=0, given_up=0, duration_s=30, actual_tokens=1200),
    )
    (refactor,) = run_samples(RunSnapshot.from_hash("r1", fold(events)))
    assert (refactor.category, refactor.predicted_tokens, refactor.actual_tokens) == ("refactoring", 900, 1200)


def _stratum_sample(
    i: int, category: str, complexity: str, deliverables: int, *, complete: bool = True, truncated: int = 0
):
    return EstimationSample(
        phase_id=f"s{i}",
        category=category,
        complexity=complexity,  # type: ignore[arg-type]
        deliverables=deliverables,
        predicted_tokens=100,
        actual_tokens=100 + 10 * i,
        success=complete,
        complete=complete,
        truncated=truncated,
    )


def test_incomplete_phases_are_left_out_by_default_and_counted():
    samples = [_stratum_sample(i, "implementation", "low", 2) for i in range(3)]
    cut_short = _stratum_sample(9, "implementation", "low", 2, complete=False)  # 190 of 100: 62 % SMAPE
    report = build_report([*samples, cut_short])
    assert report.summary.count == 3 and report.excluded_incomplete == 1
    assert [s.phase_id for s in report.samples] == ["s0", "s1", "s2"]
    everything = build_report([*samples, cut_short], include_incomplete=True)
    assert everything.summary.count == 4 and everything.excluded_incomplete == 0


def test_stratified_figures_and_coverage_gaps_match_a_hand_computed_fixture():
    samples = [
        _stratum_sample(0, "implementation", "low", 2),  # SMAPE 0
        _stratum_sample(1, "implementation", "high", 5, truncated=2),  # 110 vs 100: 9.52 %
        _stratum_sample(2, "implementation", "high", 9),  # 120 vs 100: 18.18 %
        _stratum_sample(3, "testing", "medium", 20, truncated=1),  # 130 vs 100: 26.09 %
    ]
    declared = DeclaredStrata(category=["implementation", "testing", "docs"], min_samples=2)
    report = build_report(samples, declared=declared)
    impl = report.by_category["implementation"]
    assert impl.count == 3 and impl.truncated == 2
    assert impl.mean_smape == pytest.approx((0 + 200 * 10 / 210 + 200 * 20 / 220) / 3)
    assert impl.median_smape == pytest.approx(200 * 10 / 210)
    assert report.by_complexity["high"].truncated == 2 and report.summary.truncated == 3
    gaps = {(g.dimension, g.stratum): g.samples for g in report.gaps}
    assert gaps == {
        ("category", "testing"): 1,
        ("category", "docs"): 0,
        ("complexity", "low"): 1,
        ("complexity", "medium"): 1,
        ("complexity", "maintenance"): 0,
        ("deliverables", "1-3"): 1,
        ("deliverables", "4-7"): 1,
        ("deliverables", "8-15"): 1,
        ("deliverables", "16+"): 1,
    }
