"""Stalled runs: a worker that dies without a word (SIGKILL, the OOM killer, a lost host) stops
sending heartbeats, and the gateway finishes its runs as `stalled`.

Every `stall_check_interval_s` the gateway holding the leader lease reads the active runs
(`keys.RUNS_ACTIVE`) and their stats in one pipeline. A run still `running` whose last heartbeat
(or its start, before the first) is older than two of its heartbeat intervals plus
`stall_margin_s` is closed `stalled` (heartbeats_stopped) by `closing.close_run`: the gateway
takes the run from its worker (a new owner epoch: whatever the worker writes later is refused,
and it stops when it learns so) and writes the closing chunk itself (each call in flight
`call.failed` cancelled, each open phase `stalled`, `run.finished`), guarded by `running`. The
lease keeps the scan on one gateway; the epoch and the guard make the mark exact even when two
gateways overlap, or when the worker finishes the run at that very moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from livestats_shared import keys
from livestats_shared.closing import close_run
from livestats_shared.errors import InvalidRunId, PublishError
from livestats_shared.events import Outcome
from livestats_shared.ids import validate_run_id
from livestats_shared.publish import EventRefused, Publisher
from livestats_shared.redis_client import UNAVAILABLE
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config import GatewayConfig
from .lease import Lease

log = logging.getLogger("livestats.gateway.stalls")

_FIELDS = ["status", "heartbeat_ts", "started_ts", "heartbeat_s", "worker"]
_PAGE = 500  # runs per HMGET pipeline
# The client has no socket timeout (see redis_client.connect): every round trip gets a bound.
_COMMAND_TIMEOUT_S = 5.0
_BACKOFF_MAX_S = 30.0
# An outage (warning), or an error reply (error, logged with the reply): either way, try again.
_REDIS_TROUBLE: tuple[type[Exception], ...] = (*UNAVAILABLE, RedisError)
# A stall mark not written this time (the next scan tries again).
_MARK_NOT_WRITTEN: tuple[type[Exception], ...] = (PublishError, EventRefused, TimeoutError, *_REDIS_TROUBLE)


@dataclass(frozen=True)
class RunLiveness:
    """What the stats hash says about whether a run's worker is still there."""

    status: str | None
    last_sign_ms: int | None  # last heartbeat, else the start (epoch ms, the worker's clock)
    heartbeat_s: float | None
    worker: str

    @classmethod
    def from_fields(cls, values: Sequence[bytes | None]) -> RunLiveness:
        status, heartbeat_ts, started_ts, heartbeat_s, worker = (_text(v) for v in values)
        interval = _number(heartbeat_s)
        return cls(
            status=status,
            last_sign_ms=_latest(_whole(heartbeat_ts), _whole(started_ts)),
            heartbeat_s=interval if interval is not None and interval > 0 else None,
            worker=worker or "unknown",
        )


class StallMonitor:
    """Marks runs `stalled` when their heartbeats stop. An async context manager: the scan
    loop runs in a background task between enter and exit."""

    def __init__(self, config: GatewayConfig, redis: Redis, publisher: Publisher) -> None:
        self.config = config
        self.redis = redis
        self.publisher = publisher
        self.interval_s = config.stall_check_interval_s
        self.lease = Lease(redis, keys.STALL_LEADER, int(keys.STALL_LEASE_INTERVALS * self.interval_s * 1000))
        self.stalled_marked = 0  # runs this gateway finished as stalled
        self.scans = 0  # completed scans of the active set
        self._task: asyncio.Task[None] | None = None
        # Silence counts only from when this monitor began watching, or last saw Redis come
        # back: after an outage, workers' buffered heartbeats land a moment after Redis
        # returns, and runs that were fine all along must not be marked in that moment.
        self._seeing_redis_since_ms: int | None = _now_ms()

    async def __aenter__(self) -> StallMonitor:
        self._task = asyncio.create_task(self._loop(), name="livestats-stall-monitor")
        self._task.add_done_callback(self._loop_ended)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # a death was logged already
            self._task = None
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                await self.lease.release()
        except _REDIS_TROUBLE as exc:
            log.warning("stall monitor: lease not released (%s); it lapses within %d ms", exc, self.lease.ttl_ms)

    def alive(self) -> bool:
        """The scan loop is running (for /readyz)."""
        return self._task is not None and not self._task.done()

    @property
    def leader(self) -> bool:
        """This gateway holds the lease, so it is the one that scans."""
        return self.lease.held

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        # The loop handles Redis errors itself; anything that ends it is a bug, and until the
        # gateway restarts no stalled run is marked by it. alive() now says so to /readyz.
        log.critical("stall monitor stopped: stalled runs will not be marked", exc_info=task.exception())

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                    leading = await self.lease.acquire_or_renew()
                if self._seeing_redis_since_ms is None:
                    self._seeing_redis_since_ms = _now_ms()
                if leading:
                    await self.scan()
            except _REDIS_TROUBLE as exc:
                failures += 1
                self._seeing_redis_since_ms = None
                delay = min(self.interval_s * 2 ** min(failures, 16), _BACKOFF_MAX_S)  # capped: no overflow
                level = logging.WARNING if isinstance(exc, UNAVAILABLE) else logging.ERROR
                log.log(
                    level, "stall check failed (%s: %s); retry %d in %.1f s", type(exc).__name__, exc, failures, delay
                )
                await asyncio.sleep(delay)
                continue
            if failures:
                log.warning("stall checks work again after %d failed attempts", failures)
                failures = 0
            await asyncio.sleep(self.interval_s)

    async def scan(self) -> None:
        """One pass over the active runs: mark the silent ones, drop the finished ones.
        The loop calls it only while holding the lease; it is safe without (the guard)."""
        async with asyncio.timeout(_COMMAND_TIMEOUT_S):
            members: list[bytes] = await self.redis.zrange(keys.RUNS_ACTIVE, 0, -1)
        ended: list[bytes] = []
        stalled: list[tuple[str, float, str]] = []  # run id, seconds silent, worker
        for start in range(0, len(members), _PAGE):
            page: list[tuple[bytes, str]] = []
            for member in members[start : start + _PAGE]:
                try:
                    page.append((member, validate_run_id(member.decode(errors="replace"))))
                except InvalidRunId:
                    log.warning("active runs set holds %r, which is not a run id; removing it", member)
                    ended.append(member)
            async with asyncio.timeout(_COMMAND_TIMEOUT_S), self.redis.pipeline(transaction=False) as pipe:
                for _, run_id in page:
                    pipe.hmget(keys.run_stats(run_id), _FIELDS)
                rows = await pipe.execute()
            now_ms = _now_ms()
            for (member, run_id), values in zip(page, rows, strict=True):
                run = RunLiveness.from_fields(values)
                if run.status != "running":
                    ended.append(member)  # finished (its index update was lost) or expired
                elif (silent_s := self._stalled_for(run, now_ms)) is not None:
                    stalled.append((run_id, silent_s, run.worker))
        if ended:
            # Safe against a race: a run leaves `running` only once, and never goes back.
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                await self.redis.zrem(keys.RUNS_ACTIVE, *ended)
        if stalled:
            await asyncio.gather(*(self._mark(*run) for run in stalled))
        self.scans += 1

    def _stalled_for(self, run: RunLiveness, now_ms: int) -> float | None:
        """Seconds the running run has been silent, if that is too long; else None."""
        if run.last_sign_ms is None or self._seeing_redis_since_ms is None:
            return None
        interval = run.heartbeat_s or self.config.default_run_heartbeat_s
        allowed_ms = (2 * interval + self.config.stall_margin_s) * 1000
        # Heartbeat times come from the worker's clock: the margin also absorbs clock skew.
        if now_ms - max(run.last_sign_ms, self._seeing_redis_since_ms) <= allowed_ms:
            return None
        return (now_ms - run.last_sign_ms) / 1000

    async def _mark(self, run_id: str, silent_s: float, worker: str) -> None:
        detail = f"no heartbeat for {silent_s:.1f} s (worker {worker})"
        note = f"run marked stalled ({detail}); its worker is fenced out and kills this call when it resumes"
        try:
            # Bounded: the client has no socket timeout (publish_all has its own bound).
            async with asyncio.timeout(3 * _COMMAND_TIMEOUT_S):
                status, wrote = await close_run(
                    self.redis,
                    self.publisher,
                    run_id,
                    Outcome.STALLED,
                    "heartbeats_stopped",
                    detail,
                    allowed=("running",),
                    note=note,
                )
        except _MARK_NOT_WRITTEN as exc:
            log.warning("run %s looks stalled but the mark was not written (%s); next check retries", run_id, exc)
            return
        if not wrote:
            # Another gateway marked it first, or its worker finished it meanwhile.
            log.debug("run %s not marked stalled: it is %s now", run_id, status)
            return
        self.stalled_marked += 1
        log.warning("run %s stalled: %s", run_id, detail)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def _whole(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _latest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
