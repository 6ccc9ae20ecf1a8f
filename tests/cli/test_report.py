"""`livestats report --estimation FILE`: the command as a script runs it (no Redis needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def livestats(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livestats_cli", *argv], input=stdin, capture_output=True, text=True, timeout=60
    )


def sample(phase_id, p, a, success=True, **extra) -> str:
    fields = {"category": "testing", "complexity": "low", "deliverables": 2}
    fields.update(extra)
    return json.dumps({"phase_id": phase_id, **fields, "predicted_tokens": p, "actual_tokens": a, "success": success})


LINES = [
    sample("a", 100, 80, category="implementation", complexity="medium"),  # SMAPE 200/9 %, ratio 1.25
    "{not json",  # line 2
    sample("b", 100, 150, success=False, deliverables=9),  # SMAPE 40 %, ratio 2/3, under
    sample("z", 0, 0),  # SMAPE 0 (defined), no ratio
    sample("t", 5, 500, is_test=True),  # a test sample: listed apart
    json.dumps({"phase_id": "c", "predicted_tokens": -1, "actual_tokens": 3, "success": True}),  # line 6
]


@pytest.fixture
def samples_file(tmp_path):
    path = tmp_path / "samples.ndjson"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_json_report_has_the_documented_shape_and_hand_computed_figures(samples_file):
    done = livestats("report", "--estimation", str(samples_file), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"samples", "summary", "by_category", "by_complexity", "by_deliverables"}
    assert [set(s) for s in report["samples"]] == [{"phase_id", "smape", "waste_ratio", "underestimated"}] * 3
    assert [s["phase_id"] for s in report["samples"]] == ["a", "b", "z"]
    summary = report["summary"]
    assert set(summary) == {
        "count",
        "mean_smape",
        "median_smape",
        "median_waste_ratio",
        "underestimation_rate",
        "success_rate",
        "truncated",
    }
    assert summary["count"] == 3
    assert summary["mean_smape"] == pytest.approx((200 / 9 + 40 + 0) / 3)  # 20.74 %
    assert summary["median_smape"] == pytest.approx(200 / 9)
    assert summary["median_waste_ratio"] == pytest.approx((1.25 + 2 / 3) / 2)  # of two defined ratios
    assert summary["underestimation_rate"] == pytest.approx(100 / 3)  # b
    assert summary["success_rate"] == pytest.approx(200 / 3)  # a and z
    assert report["by_deliverables"]["8-15"]["count"] == 1 and report["by_deliverables"]["1-3"]["count"] == 2
    assert [s["phase_id"] for s in report["test_samples"]] == ["t"]
    # Malformed lines: named by number on stderr, skipped, never fatal.
    assert f"{samples_file}:2: skipped: not JSON" in done.stderr
    assert f"{samples_file}:6: skipped: predicted_tokens" in done.stderr


def test_without_json_the_report_is_a_readable_table(samples_file):
    done = livestats("report", "--estimation", "-", stdin=samples_file.read_text())
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["count", "mean", "SMAPE", "median", "waste", "under", "success"]
    assert rows[1].split() == ["all", "samples", "3", "20.7", "%", "0.96", "33.3", "%", "66.7", "%"]
    assert any(r.split()[:2] == ["category:", "implementation"] for r in rows)
    assert rows[-1] == "1 test samples left out, 2 malformed lines skipped"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--estimation", "/no/such/file.ndjson"], "cannot read"),
        (["report"], "--estimation"),
    ],
)
def test_an_unreadable_file_or_a_missing_option_is_exit_code_2(argv, message):
    done = livestats(*argv)
    assert done.returncode == 2 and message in done.stderr
