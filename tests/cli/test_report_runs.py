"""`livestats report --models | --calibrate | --runs` over runs in Redis and through a gateway:
the same figures both ways, and equal to the shared functions over the same events."""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys

import pytest
from analysis_runs import publish_run


def livestats(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "livestats_cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
async def tagged_runs(publisher):
    tag = "t" + secrets.token_hex(4)
    rng = random.Random(11)
    ids = []
    for i in range(12):
        out = rng.randint(200, 900)
        ids.append(
            await publish_run(
                publisher,
                owner="alice",
                tag=tag,
                model="big" if i % 2 else "mystery",
                calls=2,
                out_tokens=out,
                predicted=round(2 * (100 + out) / 1.3),
                category="implementation",
                complexity="medium",
            )
        )
    return tag, ids


async def test_models_over_redis_equal_the_gateways_answer(tagged_runs, redis_url, gateway):
    tag, _ = tagged_runs
    direct = livestats("report", "--models", "--tag", tag, "--json", "--redis-url", redis_url)
    assert direct.returncode == 0, direct.stderr
    via = livestats(
        "report", "--models", "--tag", tag, "--json", "--gateway", gateway.http, f"--token={gateway.token}"
    )  # a token may start with "-"
    assert via.returncode == 0, via.stderr
    rows = json.loads(direct.stdout)["rows"]
    assert rows == json.loads(via.stdout)["rows"]
    by_model = {r["model"]: r for r in rows}
    assert by_model["big"]["calls"] == 12 and by_model["mystery"]["cost_usd"] is None
    table = livestats("report", "--models", "--tag", tag, "--redis-url", redis_url)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:4] == ["model", "phase", "runs", "calls"]
    assert "unknown (12 unpriced)" in table.stdout and "12 runs compared" in table.stdout


async def test_calibration_exports_factors_and_recovers_the_bias(tagged_runs, redis_url, tmp_path):
    tag, _ = tagged_runs
    out = tmp_path / "factors.json"
    done = livestats(
        "report",
        "--calibrate",
        "--tag",
        tag,
        "--by",
        "category",
        "--min-samples",
        "4",
        "--out",
        str(out),
        "--redis-url",
        redis_url,
    )
    assert done.returncode == 0, done.stderr
    factors = json.loads(out.read_text())
    [stratum] = factors["strata"]
    assert stratum["stratum"] == "category=implementation" and stratum["factor"] == pytest.approx(1.3, rel=0.05)
    assert "a real improvement" in done.stdout


async def test_bad_choices_exit_2_with_one_line(redis_url):
    done = livestats("report", "--calibrate", "--by", "colour", "--redis-url", redis_url)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--by" in done.stderr
    missing = livestats("report", "--models", "--run", "nope-not-here", "--redis-url", redis_url)
    assert missing.returncode == 3, missing.stderr  # not found
    nothing = livestats("report")
    assert nothing.returncode == 2 and "--estimation" in nothing.stderr
