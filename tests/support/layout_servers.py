"""Servers of their own for the key-layout tests: the session's server already holds a layout
record (every gateway and worker writes or checks it), and these tests need empty databases,
old layouts and a server that enforces hash slots.

`fresh_server` is an embedded Valkey with an empty database. `slot_checking_server` is one in
cluster mode that owns all 16,384 slots: a plain client reaches every key on it, and it refuses
(CROSSSLOT) every command, transaction and script call whose declared keys span two slots, as a
Cluster does.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from livestats_cli.compat import valkey_binary
from livestats_cli.embedded import EmbeddedServer, free_port
from livestats_shared.redis_client import UNAVAILABLE
from redis.asyncio import Redis

CLUSTER_SLOTS = 16_384


@contextmanager
def fresh_server(data_dir: Path, *, appendonly: bool = False) -> Iterator[EmbeddedServer]:
    """`appendonly`: its data survives `stop()` and `start()` (a test that takes it away)."""
    server = EmbeddedServer(data_dir, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _spawn_cluster_node(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(valkey_binary()),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", "", "--appendonly", "no",
        "--cluster-enabled", "yes", "--cluster-config-file", str(data_dir / "nodes.conf"),
        # Its own free port for the cluster bus (by default port + 10000, which may not exist).
        "--cluster-port", str(free_port()),
    ]  # fmt: skip
    with open(data_dir / "server.log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), f"redis://127.0.0.1:{port}/0"


@asynccontextmanager
async def slot_checking_server(data_dir: Path) -> AsyncIterator[str]:
    """A cluster-mode node holding every slot; yields its redis:// URL."""
    proc, url = await asyncio.to_thread(_spawn_cluster_node, data_dir)
    try:
        client = Redis.from_url(url)
        try:

            async def answers() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the cluster-mode server exited; see {data_dir / 'server.log'}")
                return bool(await client.ping())

            await _until(answers)
            await client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, CLUSTER_SLOTS - 1)

            async def cluster_ok() -> bool:
                return b"cluster_state:ok" in await client.execute_command("CLUSTER", "INFO")

            await _until(cluster_ok)
        finally:
            await client.aclose()
        yield url
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)


async def _until(check: Callable[[], Awaitable[object]], tries: int = 3_000) -> None:
    """Until `check()` answers truthy: a server opening its port, a cluster state settling."""
    last: Exception | None = None
    for _ in range(tries):
        try:
            if await check():
                return
        except UNAVAILABLE as exc:
            last = exc
        await asyncio.sleep(0.02)
    raise AssertionError(f"server not ready: {last}")
