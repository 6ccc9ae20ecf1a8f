"""Session fixtures: a private Redis-compatible server on a free port (stoppable, restartable).

Set REDIS_URL to run the suite against another server instead (e.g. the machine's Redis 7);
the tests that stop and restart the server are then skipped.

A test marked `cluster` runs twice: `[single]` as above and `[cluster]` against a local Valkey
Cluster (3 primaries, 3 replicas, started once per session on first use; tests/support/cluster.py):
its `redis_url` (and so `redis`, `publisher`, `start_gateway`) is the cluster's. Such a test uses
no arq queue: arq cannot run on a Cluster, and the queue server is configured on its own.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cluster import LocalCluster
from gateway_fixtures import gateway, make_token, start_gateway  # noqa: F401 -- real gateways for every test dir
from livestats_cli.embedded import EmbeddedServer
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from livestats_worker.config import WorkerConfig
from livestats_worker.serve import serve
from proc_util import kill_all_with_env
from redis.asyncio import Redis
from sentinel_fixtures import sentinel_set, session_sentinel_set  # noqa: F401 -- Sentinel-managed primaries

# The suite acts as an operator who lets run specs set the simulator's knobs (FPF_SIM_*) and the
# model (FPF_MODEL): every worker and gateway it starts, in process or as a child, reads this.
# Tests of the rule itself pass their own allowlist.
os.environ.setdefault("LIVESTATS_SPEC_ENV_ALLOW", "FPF_SIM_*,FPF_MODEL")


class ServerHandle:
    def __init__(self, url: str, embedded: EmbeddedServer | None) -> None:
        self.url = url
        self.embedded = embedded

    def require_control(self) -> EmbeddedServer:
        if self.embedded is None:
            pytest.skip("REDIS_URL points at an external server; this test stops and restarts its own")
        return self.embedded


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `cluster` also runs against the session's Cluster, one marked `also_sentinel`
    (sentinel_fixtures.on_each_server) against its Sentinel-managed primary."""
    if "backend" not in metafunc.fixturenames:
        return
    variants: list[object] = []
    if metafunc.definition.get_closest_marker("cluster"):
        variants.append("cluster")
    if metafunc.definition.get_closest_marker("also_sentinel"):
        variants.append(pytest.param("sentinel", marks=pytest.mark.sentinel))
    if variants:
        metafunc.parametrize("backend", ["single", *variants], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """ "single" (the session's server), "cluster" or "sentinel" (variants, see above)."""
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's Cluster, shared by every `[cluster]` variant: tests may move its slots
    (it stays healthy) but never kill its nodes (`fresh_cluster` is for that)."""
    cluster = LocalCluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A Cluster of the test's own, with a short failure-detection time: for killing nodes."""
    cluster = LocalCluster(tmp_path / "cluster", node_timeout_ms=1000)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    external = os.environ.get("REDIS_URL")
    if external:
        yield ServerHandle(external, None)
        return
    server = EmbeddedServer(Path(tmp_path_factory.mktemp("valkey")))
    server.start()
    try:
        yield ServerHandle(server.url, server)
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: ServerHandle, backend: str, request: pytest.FixtureRequest) -> str:
    """The session's server; its Cluster for the `[cluster]` variant, its Sentinel-managed primary
    for the `[sentinel]` one."""
    if backend == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        # arq's queue and the scheduler cannot live on a Cluster: every process of the test (and
        # every subprocess it starts) puts them on the session's single server.
        if redis_server.embedded is not None:
            redis_server.embedded.start()
        request.getfixturevalue("monkeypatch").setenv("LIVESTATS_QUEUE_REDIS_URL", redis_server.url)
        return cluster.url
    if backend == "sentinel":
        sentinels = request.getfixturevalue("session_sentinel_set")
        return str(sentinels.url)
    if redis_server.embedded is not None:
        redis_server.embedded.start()  # a previous test may have left it stopped
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, "livestats.tests")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def queue_name() -> str:
    """A private arq queue per test, so workers of different tests never take each other's jobs."""
    return f"livestats:test-queue:{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def publisher(redis: Redis) -> AsyncIterator[Publisher]:
    pub = await Publisher(redis).start()
    try:
        yield pub
    finally:
        await pub.close()


@pytest.fixture
async def start_worker(redis_url: str, queue_name: str) -> AsyncIterator[object]:
    """Start an in-process arq worker on this test's queue; stopped (like SIGTERM) at teardown."""
    stop = asyncio.Event()
    running = []

    async def start(**overrides: object) -> WorkerConfig:
        settings = {"heartbeat_interval_s": 0.5, "kill_grace_s": 0.5, "shutdown_grace_s": 0, **overrides}
        config = WorkerConfig(redis_url=redis_url, queue_name=queue_name, **settings)  # type: ignore[arg-type]
        running.append(asyncio.create_task(serve(config, stop)))
        return config

    yield start
    stop.set()
    await asyncio.gather(*running)


@pytest.fixture
async def start_worker_process(redis_url: str, queue_name: str):
    """Start `python -m livestats_worker`; whatever a failing test leaves running is killed."""
    markers: list[str] = []

    async def start(**settings: str) -> tuple[asyncio.subprocess.Process, str]:
        marker = uuid.uuid4().hex
        markers.append(marker)
        env = {
            **os.environ,
            "LIVESTATS_REDIS_URL": redis_url,
            "LIVESTATS_QUEUE_NAME": queue_name,
            "LIVESTATS_HEARTBEAT_INTERVAL_S": "0.5",
            "LS_TEST_MARKER": marker,
            # FPF gets a minimal environment: pass the marker on, so the cleanup below finds FPF too.
            "LIVESTATS_FPF_ENV": "FPF_*,LS_TEST_MARKER",
            **{f"LIVESTATS_{k.upper()}": v for k, v in settings.items()},
        }
        # Its log goes to the test's output; an unread pipe would fill and block the worker.
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "livestats_worker", env=env, stderr=None)
        return proc, marker

    yield start
    for marker in markers:
        kill_all_with_env("LS_TEST_MARKER", marker)


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique FPF_RUN_ID; whatever a test leaves running under it is killed afterwards."""
    value = f"test-{uuid.uuid4().hex}"
    yield value
    kill_all_with_env("FPF_RUN_ID", value)
