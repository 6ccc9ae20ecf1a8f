"""Fixtures for the metrics tests: workers with a metrics port, scrapes parsed into samples, and
the promtool/prometheus binaries (gateways come from tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from livestats_cli.embedded import free_port
from scrape_util import wait_for_scrape

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def metrics_worker(start_worker):
    """Start an in-process worker serving /metrics on a free port; returns its metrics URL."""

    async def start(**overrides: object) -> str:
        port = free_port()
        await start_worker(metrics_port=port, **overrides)
        url = f"http://127.0.0.1:{port}/metrics"
        await wait_for_scrape(url)
        return url

    return start


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package `prometheus`; .ci/run installs it)")
    return path


@pytest.fixture(scope="session")
def promtool() -> Iterator[object]:
    path = _binary("promtool")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)

    yield run


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return _binary("prometheus")
