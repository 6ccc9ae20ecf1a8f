"""Fixtures for the metrics tests: gateways (the gateway tests' own fixtures), workers with a
metrics port, scrapes parsed into samples, and the promtool/prometheus binaries."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from livestats_cli.embedded import free_port
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# The gateway tests' fixtures (a real uvicorn per gateway), loaded under a name of their own so
# both conftest modules coexist; whatever they gain (auth headers) these tests get too.
_spec = importlib.util.spec_from_file_location("livestats_gateway_fixtures", ROOT / "tests" / "gateway" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_gateway_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _gateway_fixtures
_spec.loader.exec_module(_gateway_fixtures)
start_gateway = _gateway_fixtures.start_gateway
gateway = _gateway_fixtures.gateway

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape_text(url: str) -> str:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return response.text


def scrape(url: str) -> Samples:
    return parse(scrape_text(url))


async def wait_for_scrape(url: str, timeout_s: float = 10) -> None:
    """Wait until `url` answers (an in-process worker starts its exposition once its task runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            scrape_text(url)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


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
