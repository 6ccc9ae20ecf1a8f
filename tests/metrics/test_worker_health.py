"""`livestats-worker --check`: healthy while the worker ticks and reaches Redis; unhealthy,
with the reason, when its Redis connection fails, when its heartbeat is stale, or when nothing
answers on its metrics port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from livestats_cli.embedded import free_port
from livestats_worker.config import WorkerConfig
from livestats_worker.health import check, judge


async def _until_health(config: WorkerConfig, ok: bool, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while (health := await asyncio.to_thread(check, config)).ok is not ok:
        assert time.monotonic() < deadline, f"health stayed {health}"
        await asyncio.sleep(0.1)
    return health.reason


async def test_check_passes_while_the_worker_reaches_redis_and_fails_when_its_connection_does_not(
    redis_server, metrics_worker
):
    url = await metrics_worker(heartbeat_interval_s=0.2)
    port = int(url.split(":")[2].split("/")[0])
    config = WorkerConfig(metrics_port=port, heartbeat_interval_s=0.2)
    assert "Redis answering" in await _until_health(config, ok=True)

    server = redis_server.require_control()
    server.stop()
    try:
        # the exposition still answers (its own thread): only the worker's Redis check tells
        assert "Redis check failed" in await _until_health(config, ok=False)
    finally:
        server.start()
    await _until_health(config, ok=True)


def test_a_stale_heartbeat_or_a_missing_one_is_unhealthy():
    now = 1_000_000.0
    fresh = {"livestats_worker_heartbeat_timestamp_seconds": now - 1, "livestats_worker_redis_up": 1}
    assert judge(fresh, heartbeat_interval_s=5, now=now).ok
    stale = {**fresh, "livestats_worker_heartbeat_timestamp_seconds": now - 60}
    assert "event loop stuck" in judge(stale, heartbeat_interval_s=5, now=now).reason
    assert not judge({**fresh, "livestats_worker_heartbeat_timestamp_seconds": 0}, 5, now).ok
    assert not judge({"livestats_worker_redis_up": 1}, 5, now).ok
    assert not judge({**fresh, "livestats_worker_redis_up": 0}, 5, now).ok


def test_the_command_exits_non_zero_with_the_reason_when_nothing_answers():
    env = {**os.environ, "LIVESTATS_METRICS_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "livestats_worker", "--check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr


def test_the_command_refuses_without_a_metrics_port():
    env = {k: v for k, v in os.environ.items() if k != "LIVESTATS_METRICS_PORT"}
    result = subprocess.run(
        [sys.executable, "-m", "livestats_worker", "--check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "LIVESTATS_METRICS_PORT" in result.stderr


async def test_the_command_passes_against_a_running_worker_process(start_worker_process):
    port = free_port()
    proc, _ = await start_worker_process(metrics_port=str(port))
    env = {**os.environ, "LIVESTATS_METRICS_PORT": str(port), "LIVESTATS_HEARTBEAT_INTERVAL_S": "0.5"}
    deadline = time.monotonic() + 30
    while True:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "livestats_worker", "--check"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, result.stderr
        await asyncio.sleep(0.2)
    assert "Redis answering" in result.stdout
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await proc.wait() == 0
