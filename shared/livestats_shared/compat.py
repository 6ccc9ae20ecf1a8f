"""Every use of arq's or redis-py's internals by the contract package, fenced in one place.

Policy (the same in each package's `compat` module; docs/compat.md):
- Each use names the library internal it relies on in `RELIED_ON`, with a digest of that
  internal's source as it is in the pinned version. tests/compat/ recomputes the digests and
  fails when an upgrade changes any of them: read the new source, adapt, record the new digest.
- At import, a version outside the pins in pyproject.toml is refused (`UnsupportedLibrary`):
  the overrides change how jobs are aborted and how connections are checked out, and a silent
  difference there loses runs or hangs the gateway. pip enforces the same pins, so only a
  forced install gets here. A version inside the pins that was not the one verified is only
  logged loudly: a patch release must not take the service down, and CI's digest test says
  whether it changed anything we rely on.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
import time
from importlib.metadata import version
from typing import Any

from arq.constants import abort_jobs_ss
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import LivestatsError

log = logging.getLogger(__name__)

# Pinned in pyproject.toml: arq==0.28.0, redis[hiredis]>=5.3.1,<6. Verified: the versions below.
ARQ_PINS = ((0, 28, 0), (0, 28, 1))  # [lowest, first refused)
ARQ_VERIFIED = "0.28.0"
REDIS_PINS = ((5, 3, 1), (6, 0, 0))
REDIS_VERIFIED = "5.3.1"

# Library internal (dotted name) -> digest of its source in the verified version (`source_digest`).
RELIED_ON = {
    # UnpolledPool.get_connection replaces it; it calls the two below as the original does.
    "redis.asyncio.connection.ConnectionPool.get_connection": "4876bc7de473dbc8",
    "redis.asyncio.connection.ConnectionPool.get_available_connection": "5b55e7823cc6806d",
    "redis.asyncio.connection.ConnectionPool.release": "0a8b760b0757af59",
    "redis.asyncio.connection.AbstractConnection.connect": "04fabbbd44943f68",
    # UnpolledSentinelPool: the same checkout; a Sentinel-managed connection's connect() returns
    # at once when connected, else asks the Sentinels for the primary's address.
    "redis.asyncio.sentinel.SentinelManagedConnection.connect": "1ba5ea04207af629",
    "redis.asyncio.sentinel.SentinelManagedConnection._connect_retry": "62b751ba11735f9d",
    # SentinelPool closes the Sentinel clients (`Sentinel.sentinels`) when its client closes it
    # (`Redis.aclose` calls `disconnect()`), not when a new primary makes it drop idle
    # connections (`get_master_address` calls `disconnect(inuse_connections=False)`).
    "redis.asyncio.sentinel.Sentinel.__init__": "e2862079df5c53ed",
    # StableSentinel.discover_master replaces it (and calls check_master_state as it does).
    "redis.asyncio.sentinel.Sentinel.discover_master": "469ade02956baf11",
    "redis.asyncio.sentinel.Sentinel.check_master_state": "57a20bf0d2c6edec",
    "redis.asyncio.sentinel.Sentinel.master_for": "d733f1b2311b162d",
    "redis.asyncio.sentinel.SentinelConnectionPool.get_master_address": "1fa6d36ea8f70aa3",
    "redis.asyncio.client.Redis.aclose": "ab295a9c46c80ec1",
    # request_abort writes arq's abort set as Job.abort does; the worker reads it here.
    "arq.jobs.Job.abort": "4dd2f914d8b776b7",
    "arq.worker.Worker._cancel_aborted_jobs": "54575eaf8682f95b",
    # `pipeline_evalsha`: the cluster pipeline routes a queued EVALSHA by its KEYS (one slot)
    # and follows MOVED/ASK for it, though its `evalsha` method is blocked.
    "redis.asyncio.cluster.RedisCluster._determine_slot": "97201cf5283439da",
    "redis.asyncio.cluster.ClusterPipeline._execute": "77696b32e7f6ec31",
    # cluster.ClusterClient: `initialize` turns the RedisClusterException raised when no startup
    # node answers (or slots are uncovered) into ConnectionError; `aclose` is also what redis-py
    # calls after a node error to force a new slot map; `_pool` builds per-node pools from the
    # connection kwargs (ClusterParser included, so MOVED and ASK arrive typed).
    "redis.asyncio.cluster.NodesManager.initialize": "c7bd775099266d47",
    "redis.asyncio.cluster.RedisCluster._execute_command": "181e71143d5bf53d",
    "redis.asyncio.cluster.RedisCluster.__init__": "18183336d2d41e24",
}


class UnsupportedLibrary(LivestatsError, ImportError):
    """An installed library is outside the versions livestats pins (and relies on internals of)."""


def source_digest(obj: object) -> str:
    """First 16 hex digits of the SHA-256 of `obj`'s source: what tests/compat/ compares."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string; missing parts are 0, suffixes ignored."""
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def require(dist: str, installed: str, pins: tuple[tuple[int, int, int], tuple[int, int, int]], verified: str) -> None:
    """Refuse `installed` outside [pins[0], pins[1]); log loudly if it is not `verified`."""
    low, high = pins
    if not low <= parse_version(installed) < high:
        raise UnsupportedLibrary(
            f"{dist} {installed} is installed; livestats relies on its internals and supports "
            f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))} (see docs/compat.md)"
        )
    if installed != verified:
        log.warning(
            "%s %s is within the pins but livestats' use of its internals was verified on %s: "
            "run tests/compat before trusting it (docs/compat.md)",
            dist,
            installed,
            verified,
        )


require("arq", version("arq"), ARQ_PINS, ARQ_VERIFIED)
require("redis", version("redis"), REDIS_PINS, REDIS_VERIFIED)


async def request_abort(redis: Redis, job_id: str) -> None:
    """Ask arq to abort job `job_id`: a running job's task is cancelled within a poll, a queued
    one never starts. `Job.abort` does the same write but then waits for the job's result,
    which a cancel request must not do."""
    await redis.zadd(abort_jobs_ss, {job_id: int(time.time() * 1000)})


def pipeline_evalsha(pipe: Any, sha: str, keys: list[str], args: list[str | bytes]) -> None:
    """Queue EVALSHA `sha` on `pipe`, a single server's or a Cluster's pipeline. redis-py 5
    blocks the Cluster pipeline's `evalsha` method (from before its router could place a script
    by its keys), yet routes the same command queued as is by its KEYS, like any keyed command:
    every key must share one slot, which the callers' hash tags ensure."""
    pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)


class UnpolledPool(ConnectionPool):
    """redis-py 5's pool takes one pool-wide lock for every checkout and, holding it, polls the
    socket with a zero timeout, which always waits for the next event-loop iteration. On a busy
    loop that is one command per iteration for the whole pool: in the gateway under fan-out,
    joining clients queued for seconds behind that lock (commit a9d3a87). The poll guards against
    a connection returned with a reply unread; redis-py never does that (it disconnects on any
    error or cancellation mid-command), and an idle connection the server dropped is caught by
    the health check before its next command."""

    async def get_connection(self, command_name: object = None, *keys: object, **options: object) -> AbstractConnection:
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        # (no await in it: safe without the lock on a single-threaded loop)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # returns at once when connected
        except BaseException:
            await self.release(connection)
            raise
        return connection


class SentinelPool(SentinelConnectionPool):
    """redis-py's pool for a Sentinel-managed primary leaves the connections to the Sentinels
    themselves open when its client is closed (a ResourceWarning per Sentinel, and sockets kept
    until garbage collection). This one closes them with the pool; they reopen if it is used again."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        try:
            # Raises the first error of its connections' (one to a dead primary can fail to close).
            await super().disconnect(inuse_connections)
        finally:
            if inuse_connections:  # the client is closing, not dropping idle links to a former primary
                sentinels = self.sentinel_manager.sentinels
                closed = await asyncio.gather(*(s.aclose() for s in sentinels), return_exceptions=True)
                for sentinel, outcome in zip(sentinels, closed, strict=True):
                    if isinstance(outcome, Exception):
                        log.warning("closing the connection to Sentinel %r failed: %r", sentinel, outcome)


class UnpolledSentinelPool(SentinelPool):
    """`UnpolledPool`'s checkout for a Sentinel-managed primary (the busy gateway's clients)."""

    get_connection = UnpolledPool.get_connection


class StableSentinel(Sentinel):
    """redis-py's `discover_master` moves the Sentinel that answered to the front of the list by
    its index from before its await; two discoveries at once (every connection of a pool
    reconnecting in a failover) can then write one Sentinel twice and drop another from the list,
    which is never asked again and whose connections are never closed. This one swaps by the
    index the Sentinel has when it answered."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors = []
        for sentinel in list(self.sentinels):
            try:
                masters = await sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                at = self.sentinels.index(sentinel)  # no await from here on: the swap is atomic
                self.sentinels[0], self.sentinels[at] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        raise MasterNotFoundError(
            f"No master found for {service_name!r}" + (f" : {', '.join(errors)}" if errors else "")
        )
