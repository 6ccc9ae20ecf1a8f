"""A worker's /metrics agrees with the events its runs published, and passes promtool's lint."""

from __future__ import annotations

import asyncio
import signal

from helpers import wait_finished
from livestats_cli.embedded import free_port
from livestats_shared.control import submit_run
from livestats_shared.history import read_events
from livestats_shared.spec import PhaseSpec, RunSpec
from scrape_util import scrape, scrape_text, total, wait_for_scrape

FAST = {"FPF_SIM_LATENCY_MS": "0", "FPF_SIM_JITTER_MS": "0"}


async def test_call_counts_tokens_and_retries_match_the_runs_events(
    redis, publisher, metrics_worker, queue_name, promtool
):
    url = await metrics_worker(metrics_models=["sim-large"])
    # Every call fails once (exit_code), then succeeds: as many retries as calls.
    spec = RunSpec(
        retry_budget_ratio=1,
        backoff_base_s=0,
        phases=[
            PhaseSpec(
                name="generate",
                calls=4,
                concurrency=2,
                predicted_tokens=100,
                env={**FAST, "FPF_SIM_FAIL_FIRST": "1", "FPF_MODEL": "sim-large"},
            ),
            PhaseSpec(name="my-own-phase", calls=2, env={**FAST, "FPF_MODEL": "unlisted"}),
        ],
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    assert (await wait_finished(redis, run_id)).payload().outcome.value == "succeeded"
    events = [e.payload() for e in await read_events(redis, run_id)]
    usage = [e.usage for e in events if type(e).__name__ == "CallSucceeded" and e.usage is not None]

    m = scrape(url)
    gen = {"phase": "generate", "model": "sim-large"}
    other = {"phase": "other", "model": "other"}  # neither name is on its allowlist
    assert total(m, "livestats_calls_total", **gen, outcome="failed", error_type="exit_code") == 4
    assert total(m, "livestats_calls_total", **gen, outcome="succeeded", error_type="none") == 4
    assert total(m, "livestats_calls_total", **other, outcome="succeeded") == 2
    assert total(m, "livestats_call_retries_total", **gen, reason="exit_code") == 4
    assert total(m, "livestats_call_duration_seconds_count") == 10
    assert total(m, "livestats_tokens_predicted_total", **gen) == 4 * 100
    assert total(m, "livestats_tokens_total", type="output") == sum(u.output_tokens for u in usage)
    assert total(m, "livestats_tokens_total", type="input") == sum(u.input_tokens for u in usage)
    assert total(m, "livestats_runs_started_total") == 1
    assert total(m, "livestats_runs_finished_total", outcome="succeeded") == 1
    assert total(m, "livestats_run_duration_seconds_count", outcome="succeeded") == 1
    assert total(m, "livestats_last_successful_run_timestamp_seconds") > 0
    assert total(m, "livestats_calls_in_flight") == 0
    assert total(m, "livestats_worker_runs_in_progress") == 0
    assert total(m, "livestats_worker_heartbeat_timestamp_seconds") > 0

    lint = promtool("check", "metrics", stdin=scrape_text(url))
    assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_kills_and_retry_budget_exhaustions_are_counted(redis, publisher, metrics_worker, queue_name):
    url = await metrics_worker()
    hangs = RunSpec(
        phases=[
            PhaseSpec(
                name="generate", calls=2, max_attempts=1, call_timeout_s=0.3, env={**FAST, "FPF_SIM_BEHAVIOUR": "hang"}
            )
        ]
    )
    storm = RunSpec(
        retry_budget_ratio=0,
        retry_budget_min=0,
        phases=[PhaseSpec(name="evaluate", calls=1, env={**FAST, "FPF_SIM_FAIL_FIRST": "5"})],
    )
    hung = await submit_run(redis, publisher, hangs, queue_name=queue_name)
    stormed = await submit_run(redis, publisher, storm, queue_name=queue_name)
    assert (await wait_finished(redis, hung)).payload().reason == "calls_given_up"
    assert (await wait_finished(redis, stormed)).payload().reason == "retry_budget_exhausted"

    m = scrape(url)
    assert total(m, "livestats_subprocess_kills_total", reason="timeout") == 2
    assert total(m, "livestats_calls_total", phase="generate", error_type="timeout") == 2
    assert total(m, "livestats_retry_budget_exhaustions_total") == 1
    assert total(m, "livestats_runs_finished_total", outcome="failed") == 2
    assert total(m, "livestats_runs_finished_total", outcome="succeeded") == 0
    assert total(m, "livestats_last_successful_run_timestamp_seconds") == 0


async def test_a_worker_process_serves_metrics_on_its_configured_port_and_stops_cleanly(start_worker_process):
    port = free_port()
    proc, _ = await start_worker_process(metrics_port=str(port), metrics_models='["sim-large"]')
    url = f"http://127.0.0.1:{port}/metrics"
    await wait_for_scrape(url, timeout_s=20)
    assert total(scrape(url), "livestats_runs_started_total") == 0
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await proc.wait() == 0


async def test_the_model_label_comes_from_the_operators_configuration_without_an_allowlist(
    redis, publisher, metrics_worker, queue_name
):
    # No LIVESTATS_METRICS_MODELS: the worker's FPF_MODEL (which FPF inherits) is a label, and
    # it is the model of a phase that names none; a name only a spec uses stays `other`.
    url = await metrics_worker(fpf_model="house-model")
    spec = RunSpec(
        phases=[
            PhaseSpec(name="generate", calls=2, env=FAST),
            PhaseSpec(name="evaluate", calls=1, env={**FAST, "FPF_MODEL": "house-model"}),
            PhaseSpec(name="compare", calls=1, env={**FAST, "FPF_MODEL": "a-spec-only-model"}),
        ],
    )
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    assert (await wait_finished(redis, run_id)).payload().outcome.value == "succeeded"
    m = scrape(url)
    assert total(m, "livestats_calls_total", model="house-model", phase="generate") == 2
    assert total(m, "livestats_calls_total", model="house-model", phase="evaluate") == 1
    assert total(m, "livestats_calls_total", model="other", phase="compare") == 1


def test_the_allowlist_is_the_operators_configuration_by_default():
    import orjson
    from livestats_worker.config import WorkerConfig
    from livestats_worker.metrics import WorkerMetrics

    prices = {"models": {"priced-model": [{"effective_from": "2026-01-01", "input_per_mtok": 1, "output_per_mtok": 2}]}}
    config = WorkerConfig(metrics_models=["listed"], fpf_model="house-model", prices=orjson.dumps(prices).decode())
    assert WorkerMetrics.for_config(config).models == {"listed", "house-model", "priced-model"}
    assert WorkerMetrics.for_config(WorkerConfig()).models == set()  # nothing configured: all `other`
