"""`livestats up` serves the worker's metrics on a free port and prints the URL; with
`--prometheus` (`make prometheus`) a real Prometheus scrapes the worker and the gateway under the
compose job names, with the deployment's alert rules, and stops with the rest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from livestats_cli.embedded import free_port
from proc_util import kill_all_with_env, pids_with_env

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> bytes:
    with _direct.open(url, timeout=5) as response:
        return response.read()


@pytest.fixture
def up_with_prometheus(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    marker = uuid.uuid4().hex
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "LIVESTATS_REDIS_URL", "LIVESTATS_METRICS_PORT")
        and not k.startswith("LIVESTATS_GATEWAY_")
    }
    env.update(
        LIVESTATS_DATA_DIR=str(tmp_path / "run"),
        LIVESTATS_EMBEDDED_PORT=str(free_port()),
        LIVESTATS_GATEWAY_PORT=str(free_port()),
        LS_TEST_MARKER=marker,
        PYTHONUNBUFFERED="1",
    )
    argv = [sys.executable, "-m", "livestats_cli", "up", "--no-demo", "--prometheus"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc, marker
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    kill_all_with_env("LS_TEST_MARKER", marker)


def _lines_until(proc: subprocess.Popen[str], text: str, timeout_s: float = 60) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not printed within {timeout_s} s; got: {''.join(lines)}")


def _query(prometheus: str, promql: str) -> dict[str, float]:
    body = json.loads(_get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"))
    return {r["metric"].get("job", ""): float(r["value"][1]) for r in body["data"]["result"]}


def test_up_prints_the_worker_metrics_url_and_runs_prometheus_against_the_stack(up_with_prometheus):
    proc, marker = up_with_prometheus
    lines = _lines_until(proc, "stack is up")
    worker_line = next(ln for ln in lines if ln.startswith("worker pid "))
    metrics_url = worker_line.rsplit("metrics at ", 1)[1].strip()
    assert metrics_url.startswith("http://127.0.0.1:") and metrics_url.endswith("/metrics")
    assert b"livestats_worker_heartbeat_timestamp_seconds" in _get(metrics_url)
    prometheus = next(ln.split()[2] for ln in lines if ln.startswith("prometheus on "))

    # both targets are up under the job names the alerts and the dashboard select on
    deadline = time.monotonic() + 60
    while (got := _query(prometheus, "up")) != {"livestats-gateway": 1, "livestats-worker": 1}:
        assert time.monotonic() < deadline, got
        time.sleep(0.5)
    rules = json.loads(_get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
    assert "LivestatsNoWorkers" in {r["name"] for group in rules for r in group["rules"]}

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert pids_with_env("LS_TEST_MARKER", marker) == []  # prometheus stopped with the rest
