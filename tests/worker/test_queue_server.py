"""LIVESTATS_QUEUE_REDIS_URL: arq's queue and the scheduler on a server of their own, telemetry on
another (docs/keys.md, "The queue server"). Runs submitted, executed and cancelled through the
gateway and the CLI leave every queue key on the queue server and every telemetry key on the
telemetry server. With telemetry on a server that enforces hash slots as a Cluster does, a run
from submit to end never sends a command, transaction or script call that spans two slots."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gateway_fixtures import GatewayHandle
from helpers import livestats, wait_finished, wait_for_event
from layout_servers import fresh_server, slot_checking_server
from livestats_cli.embedded import free_port
from livestats_gateway.config import GatewayConfig
from livestats_shared import keys, layout
from livestats_shared.auth import Scope, TokenStore
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.history import read_snapshot
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from livestats_shared.sessions import SessionStore
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_worker.config import WorkerConfig
from livestats_worker.serve import serve
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

pytestmark = pytest.mark.slow  # two servers, a worker, a gateway and CLI processes
FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "5"}
SLOW = {"FPF_SIM_LATENCY_MS": "60000"}  # a call that is still running when it is cancelled


class Servers:
    def __init__(self, telemetry_url: str, queue_url: str) -> None:
        self.telemetry_url = telemetry_url
        self.queue_url = queue_url
        self.queue_name = f"livestats:test-queue:{uuid.uuid4().hex[:8]}"
        self.telemetry = connect(telemetry_url, "livestats.tests")
        self.queue = connect(queue_url, "livestats.tests")

    async def cli(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        queue = {"LIVESTATS_QUEUE_REDIS_URL": self.queue_url}
        return await livestats(self.telemetry_url, self.queue_name, *argv, stdin=stdin, env=queue)

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            redis_url=self.telemetry_url,
            queue_redis_url=self.queue_url,
            queue_name=self.queue_name,
            heartbeat_interval_s=0.5,
            kill_grace_s=0.5,
            shutdown_grace_s=10,
        )


@asynccontextmanager
async def _worker(config: WorkerConfig) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def _servers(telemetry_url: str, queue_url: str) -> AsyncIterator[Servers]:
    servers = Servers(telemetry_url, queue_url)
    try:
        yield servers
    finally:
        await servers.telemetry.aclose()
        await servers.queue.aclose()


@pytest.fixture
async def apart(tmp_path: Path) -> AsyncIterator[Servers]:
    with fresh_server(tmp_path / "telemetry") as telemetry, fresh_server(tmp_path / "queue") as queue:
        async for servers in _servers(telemetry.url, queue.url):
            yield servers


@pytest.fixture
async def slot_checked(tmp_path: Path) -> AsyncIterator[Servers]:
    async with slot_checking_server(tmp_path / "telemetry") as telemetry_url:
        with fresh_server(tmp_path / "queue") as queue:
            async for servers in _servers(telemetry_url, queue.url):
                yield servers


async def _all_keys(redis: Redis) -> list[str]:
    return sorted([k.decode() async for k in redis.scan_iter(match="*")])


def _is_queue_key(key: str, queue_name: str) -> bool:
    return key.startswith(("arq:", keys.sched_prefix(queue_name) + ":")) or key == queue_name


async def test_runs_through_gateway_and_cli_keep_queue_and_telemetry_apart(apart):
    s = apart
    config = GatewayConfig(
        port=free_port(),
        redis_url=s.telemetry_url,
        queue_redis_url=s.queue_url,
        queue_name=s.queue_name,
        admin_token=secrets.token_urlsafe(32),
        heartbeat_s=0.5,
    )
    gateway = GatewayHandle(config).start()
    try:
        async with _worker(s.worker_config()):
            async with gateway.client() as http:
                spec = {"name": "apart", "phases": [{"name": "generate", "calls": 3, "env": FAST}]}
                answer = await http.post("/api/runs", json=spec)
                assert answer.status_code == 202, answer.text
                through_gateway = answer.json()["run_id"]
                await wait_finished(s.telemetry, through_gateway)
                snap = (await http.get(f"/api/runs/{through_gateway}")).json()
                assert (snap["status"], snap["successful_calls"]) == ("succeeded", 3)

                slow = {"name": "cancelled", "phases": [{"name": "generate", "calls": 1, "env": SLOW}]}
                to_cancel = (await http.post("/api/runs", json=slow)).json()["run_id"]
                await wait_for_event(s.telemetry, to_cancel, "call.started")
                code, out, err = await s.cli("cancel", to_cancel, "--json")
                assert code == 0, err
                assert json.loads(out)["status"] == "cancelled"
                assert await s.telemetry.exists(keys.run_cancel(to_cancel))
                await wait_for_event(s.telemetry, to_cancel, "run.finished")

            code, out, err = await s.cli("submit", "-", "--json", "--wait", stdin=_spec_json())
            assert code == 0, err
            through_cli = json.loads(out.splitlines()[0])["run_id"]
    finally:
        await asyncio.to_thread(gateway.stop)

    queue_keys, telemetry_keys = await _all_keys(s.queue), await _all_keys(s.telemetry)
    assert all(_is_queue_key(k, s.queue_name) for k in queue_keys), queue_keys
    assert not any(_is_queue_key(k, s.queue_name) for k in telemetry_keys), telemetry_keys
    # Both hold what they should: results and the schedule; every run's keys, index and record.
    assert {f"arq:result:{through_gateway}", f"arq:result:{through_cli}"} <= set(queue_keys)
    assert keys.sched_key(s.queue_name, "served") in queue_keys
    for rid in (through_gateway, to_cancel, through_cli):
        assert {keys.run_events(rid), keys.run_stats(rid), keys.run_lifecycle(rid)} <= set(telemetry_keys)
    assert {keys.LAYOUT, keys.RUNS_INDEX, keys.RUNS_FEED} <= set(telemetry_keys)
    assert keys.LAYOUT not in queue_keys  # the record is telemetry's: the queue has no layout


def _spec_json() -> str:
    return RunSpec(name="from-the-cli", phases=[PhaseSpec(name="generate", calls=2, env=FAST)]).model_dump_json()


async def test_a_run_never_spans_two_slots_of_its_telemetry_server(slot_checked):
    s = slot_checked
    async with _worker(s.worker_config()), Publisher(s.telemetry) as publisher:
        spec = RunSpec(name="slots", phases=[PhaseSpec(name="generate", calls=4, concurrency=2, env=FAST)])
        done = await submit_run(s.telemetry, publisher, spec, queue=s.queue, queue_name=s.queue_name)
        slow = RunSpec(name="slots-cancelled", phases=[PhaseSpec(name="generate", calls=1, env=SLOW)])
        cancelled = await submit_run(s.telemetry, publisher, slow, queue=s.queue, queue_name=s.queue_name)
        await wait_finished(s.telemetry, done)
        await wait_for_event(s.telemetry, cancelled, "call.started")
        # Closing a running run: the epoch, a read of stats and lifecycle in one MULTI, the closing chunk.
        status = await cancel_run(s.telemetry, publisher, cancelled, queue=s.queue, queue_name=s.queue_name)
        assert status == "cancelled"
        assert publisher.failed == 0
    snap = await read_snapshot(s.telemetry, done)
    assert snap is not None and (snap.status, snap.successful_calls) == ("succeeded", 4)
    code, out, err = await s.cli("tail", done)  # its first read is a MULTI over stats and events
    assert code == 0, err
    code, out, err = await s.cli("status", cancelled, "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled", err

    # Sessions and token revocation: MULTI/EXEC over a session and its token's session set.
    tokens = TokenStore(s.telemetry)
    record, _ = await tokens.create("alice", [Scope.READ])
    sessions = SessionStore(s.telemetry, tokens, idle_s=60, max_s=120)
    sid = await sessions.create(record)
    assert (await sessions.resolve(sid)) is not None
    await sessions.end(sid)
    again = await sessions.create(record)
    assert await tokens.revoke(record.id)
    assert await sessions.resolve(again) is None
    assert (await layout.ensure(s.telemetry)).partitions == keys.PARTITIONS_DEFAULT


async def test_a_positive_control_the_slot_checking_server_refuses_two_slots(slot_checked):
    """Without this, the test above could pass on a server that checks nothing."""
    a, b = keys.run_stats("run-a"), keys.run_stats("run-b")
    assert keys.partition_of("run-a") != keys.partition_of("run-b")
    with pytest.raises(ResponseError, match="CROSSSLOT"):
        async with slot_checked.telemetry.pipeline(transaction=True) as pipe:
            pipe.hset(a, "x", 1)
            pipe.hset(b, "x", 1)
            await pipe.execute()


def test_a_cluster_for_telemetry_needs_a_queue_server_and_the_queue_cannot_be_one():
    cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    for settings in (WorkerConfig, GatewayConfig):
        with pytest.raises(ValidationError, match="LIVESTATS_QUEUE_REDIS_URL is not set"):
            settings(redis_url=cluster)
        with pytest.raises(ValidationError, match="arq's queue and the scheduler need one server"):
            settings(redis_url="redis://127.0.0.1:6379/0", queue_redis_url=cluster)
        configured = settings(redis_url=cluster, queue_redis_url="redis://127.0.0.1:6380/0")
        assert configured.queue_url == "redis://127.0.0.1:6380/0"
        assert settings(redis_url="redis://127.0.0.1:6379/0").queue_url == "redis://127.0.0.1:6379/0"
