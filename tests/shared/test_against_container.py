"""The contract against a stock Redis 7 in a container, when a Docker engine answers."""

from __future__ import annotations

import asyncio
import os
import socket
import warnings

import pytest
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from livestats_shared.stats import PRODUCER_PREFIX, fold


def docker_engine_answers() -> bool:
    """Probe the engine's socket ourselves: the docker client leaks a socket when it fails."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a TCP engine: let testcontainers try and report
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        return s.connect_ex(host.removeprefix("unix://")) == 0


@pytest.fixture(scope="module")
def container_url():
    if not docker_engine_answers():
        pytest.skip("no Docker engine answers here; the embedded server covers the suite")
    docker_errors = pytest.importorskip("docker.errors")
    with warnings.catch_warnings():
        # testcontainers' redis module uses its own deprecated wait decorator at import time.
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.redis import RedisContainer

    try:
        container = RedisContainer("redis:7-alpine")
        container.start()
    except docker_errors.DockerException as exc:
        pytest.skip(f"no Docker engine answers here ({type(exc).__name__}); the embedded server covers the suite")
    try:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    finally:
        container.stop()


def test_publish_script_and_fold_agree_on_stock_redis(container_url):
    from livestats_shared.events import Heartbeat, PhasePlan, RunQueued, RunStarted

    async def scenario() -> None:
        client = connect(container_url, "livestats.tests")
        run_id = new_run_id()
        async with Publisher(client) as pub:
            pub.emit(run_id, RunQueued(name="c", planned_calls=1, phases=[PhasePlan(name="g", calls=1)], timeout_s=9))
            pub.emit(run_id, RunStarted(worker="w", timeout_s=9, deadline_ts=0, retry_budget=0))
            for _ in range(20):
                pub.emit(run_id, Heartbeat(elapsed_s=1, remaining_s=8, in_flight=0, pids=[]))
        events = await read_events(client, run_id)
        stats = await read_stats_hash(client, run_id)
        await client.aclose()
        assert [e.seq for e in events] == list(range(1, 23))
        assert {k: v for k, v in stats.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)

    asyncio.run(scenario())
