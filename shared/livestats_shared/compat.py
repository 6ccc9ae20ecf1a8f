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
