"""Every Redis connection of every livestats process carries a client name, arq's included, so
`CLIENT LIST` tells an operator who is connected. Checked on a server of its own during a run
(a real worker process, a real gateway with a WebSocket client attached)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest
from helpers import wait_finished, wait_for_event
from livestats_cli.embedded import EmbeddedServer
from livestats_shared.control import submit_run
from livestats_shared.spec import PhaseSpec, RunSpec
from websockets.asyncio.client import connect


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A private server: no connection another test left open can appear in its CLIENT LIST."""
    server = EmbeddedServer(tmp_path / "valkey", appendonly=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_every_connection_of_a_run_has_a_client_name(redis, publisher, gateway, start_worker_process, queue_name):
    worker, _ = await start_worker_process()
    spec = RunSpec(phases=[PhaseSpec(name="generate", calls=3, concurrency=3, env={"FPF_SIM_LATENCY_MS": "1500"})])
    run_id = await submit_run(redis, publisher, spec, queue_name=queue_name)
    async with connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
        await ws.recv()  # attached: the gateway's reader and history connections are open
        await wait_for_event(redis, run_id, "call.started", count=3)  # the worker is mid-run
        clients = await redis.client_list()
    names = [c["name"] for c in clients]
    assert all(names), f"connections without a name: {[c for c in clients if not c['name']]}"
    # a positive control: each process really is in the list, under its own name
    assert {
        "livestats.tests",  # this test's client
        "livestats.worker",  # the worker's publisher
        "livestats.worker.arq",  # arq's pool: poll loop, cancel flags, metrics tick
        "livestats.gateway",
        "livestats.gateway.reader",
    } <= set(names), names
    await wait_finished(redis, run_id)
    worker.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await worker.wait() == 0
