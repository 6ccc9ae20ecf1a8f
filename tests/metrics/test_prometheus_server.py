"""A real Prometheus server scrapes a gateway and a worker during a run, and its HTTP API
returns the series with the values the run's events imply."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import wait_finished
from livestats_cli.embedded import free_port
from livestats_shared.control import submit_run
from livestats_shared.history import read_events
from livestats_shared.spec import PhaseSpec, RunSpec
from websockets.asyncio.client import connect

pytestmark = pytest.mark.slow  # a real Prometheus server scraping a run


class PrometheusServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, targets: dict[str, str]) -> None:
        """Scrape each job's host:port every 250 ms; returns once the server is ready."""
        self._launch(targets)
        await self._ready()

    def _launch(self, targets: dict[str, str]) -> None:
        config = {
            "global": {"scrape_interval": "250ms", "scrape_timeout": "200ms"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with (self.workdir / "prometheus.log").open("wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def _ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                try:
                    ready = (await http.get(f"{self.url}/-/ready")).status_code == 200
                except httpx.HTTPError:
                    ready = False  # not listening yet
                if ready:
                    return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prometheus did not start: {(self.workdir / 'prometheus.log').read_text()[-2000:]}"
                    )
                await asyncio.sleep(0.1)

    def query(self, promql: str) -> dict[str, float]:
        """An instant query: {job label: value} for each series of the answer."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return {r["metric"].get("job", ""): float(r["value"][1]) for r in body["data"]["result"]}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(prometheus_binary, tmp_path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(prometheus_binary, tmp_path)
    yield server
    server.stop()


async def _until(prometheus: PrometheusServer, promql: str, expected: dict[str, float], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := prometheus.query(promql)) != expected:
        assert time.monotonic() < deadline, f"{promql}: {got}, expected {expected}"
        await asyncio.sleep(0.25)


async def test_prometheus_scrapes_gateway_and_worker_during_a_run(
    redis, publisher, gateway, metrics_worker, queue_name, prometheus
):
    worker_url = await metrics_worker()
    await prometheus.start({"gateway": f"127.0.0.1:{gateway.config.port}", "worker": worker_url.split("/")[2]})
    await _until(prometheus, "up", {"gateway": 1, "worker": 1})

    spec = RunSpec(
        retry_budget_ratio=1,
        backoff_base_s=0,
        phases=[
            PhaseSpec(
                name="generate", calls=5, concurrency=5, env={"FPF_SIM_LATENCY_MS": "1000", "FPF_SIM_FAIL_FIRST": "1"}
            )
        ],
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    async with connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers):
        # scraped while the run is going: a client is connected and calls are in flight (all 5
        # run at once for over a second per attempt, against a scrape every 250 ms)
        await _until(prometheus, "livestats_gateway_clients{transport='ws'}", {"gateway": 1})
        await _until(prometheus, "max_over_time(livestats_calls_in_flight[1m]) > 0", {"worker": 5})
        await wait_finished(redis, run_id)
    events = await read_events(redis, run_id)
    succeeded = sum(e.type == "call.succeeded" for e in events)
    failed = sum(e.type == "call.failed" for e in events)
    assert (succeeded, failed) == (5, 5)

    await _until(prometheus, "sum by (job) (livestats_calls_total{outcome='succeeded'})", {"worker": succeeded})
    await _until(prometheus, "sum by (job) (livestats_calls_total{error_type='exit_code'})", {"worker": failed})
    await _until(prometheus, "sum by (job) (livestats_call_retries_total)", {"worker": 5})
    await _until(prometheus, "livestats_runs_finished_total{outcome='succeeded'}", {"worker": 1})
    await _until(prometheus, "livestats_gateway_clients{transport='ws'}", {"gateway": 0})
    await _until(prometheus, "livestats_gateway_replay_events_count", {"gateway": 1})


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "livestats.json"
# What Grafana puts in for the template variables set to "All" (allValue) and the rate window.
_ALL = {"$instance": ".*", "$phase": ".*", "$model": ".*", "$__rate_interval": "1m"}


def up_style_queries() -> dict[str, str]:
    """{legend: PromQL} of every dashboard query that counts what is up (targets, Redis links,
    stall leaders), with the template variables set to All."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if re.search(r"\bup\{|_up\b|_stall_leader\b", expr):
                for variable, value in _ALL.items():
                    expr = expr.replace(variable, value)
                queries[f"{panel['title']}: {target['legendFormat']}"] = expr
    return queries


def test_the_dashboard_has_up_style_queries_to_check():
    legends = set(up_style_queries())
    assert {"Workers up: up", "Workers up: reaching Redis", "Gateway health: gateways up"} <= legends, legends


@pytest.mark.parametrize("targets", ["none", "all_down"])
async def test_up_panels_show_zero_not_no_data_when_nothing_is_up(prometheus, targets):
    if targets == "none":  # every container gone: service discovery finds no target at all
        await prometheus.start({})
    else:  # targets known, nothing listening on their ports
        down = {"livestats-worker": f"127.0.0.1:{free_port()}", "livestats-gateway": f"127.0.0.1:{free_port()}"}
        await prometheus.start(down)
        await _until(prometheus, "up", {"livestats-worker": 0, "livestats-gateway": 0})
    for legend, expr in up_style_queries().items():
        assert prometheus.query(expr) == {"": 0}, f"{legend}: {expr}"


async def test_up_panels_count_what_is_up(gateway, metrics_worker, prometheus):
    # the positive control: the same queries see a gateway and a worker that are up
    worker = (await metrics_worker()).split("/")[2]
    await prometheus.start({"livestats-gateway": f"127.0.0.1:{gateway.config.port}", "livestats-worker": worker})
    queries = up_style_queries()
    for legend in ("Workers up: up", "Workers up: reaching Redis", "Gateway health: gateways up"):
        await _until(prometheus, queries[legend], {"": 1})
