"""The fair-share scheduler's client: admit, enqueue, release, register, withdraw, and where a
queued run waits. The decisions are made by the Lua scripts beside this module, atomically, so
any number of gateways and workers share one schedule (docs/scheduling.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from .. import keys
from ..quota import Quota, QuotaExceeded

_COMMON = (files(__package__) / "common.lua").read_text()
# When a principal's queue is full and none of its runs has been dispatched twice yet, nothing is
# known about how fast its queue moves: suggest this much.
QUEUE_FULL_RETRY_MS = 5_000


def _script(name: str) -> str:
    return _COMMON + "\n" + (files(__package__) / f"{name}.lua").read_text()


SCRIPTS = {name: _script(name) for name in ("admit", "enqueue", "release", "register", "withdraw")}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class QueuePlace:
    """Why a queued run has not started (`GET /api/runs/{id}` shows it as `queue`)."""

    state: Literal["pending", "dispatched"]
    position: int | None  # 1 = next of its principal's runs; None once dispatched
    principal_running: int  # the principal's runs holding slots
    principal_limit: int  # its concurrent-run limit (0 = none)
    slots: int  # slots advertised by live workers
    slots_busy: int  # slots held by dispatched runs
    principals_waiting: int  # principals with pending runs (each gets a turn)

    @property
    def reason(self) -> str:
        if self.state == "dispatched":
            return "dispatched: a worker starts it at its next poll"
        if self.slots == 0:
            return "waiting for a worker: none is running"
        if self.principal_limit and self.principal_running >= self.principal_limit:
            return f"your {self.principal_running} concurrent runs are at the limit"
        if self.position is not None and self.position > 1:
            return f"{_ordinal(self.position)} in your queue"
        if self.slots_busy >= self.slots:
            return "waiting for a free worker slot"
        return "next to be dispatched"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "position": self.position,
            "reason": self.reason,
            "running": self.principal_running,
            "concurrent_limit": self.principal_limit,
            "worker_slots": self.slots,
            "worker_slots_busy": self.slots_busy,
            "principals_waiting": self.principals_waiting,
        }


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Scheduler:
    """One queue's schedule. Cheap to build: hold one per process or make one per call."""

    def __init__(self, redis: Redis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.prefix = keys.sched_prefix(queue_name)
        self._scripts = {name: redis.register_script(src) for name, src in SCRIPTS.items()}

    async def _run(self, name: str, *args: str | int) -> Any:
        return await self._scripts[name](keys=[], args=[self.prefix, self.queue_name, _now_ms(), *args])

    async def admit(self, run_id: str, principal: str, quota: Quota, *, queued: bool = True) -> None:
        """Count a submission against the rate and reserve a queue place (unless `queued` is
        False: an external run takes no slot). Raises QuotaExceeded."""
        verdict, retry_ms = await self._run(
            "admit",
            run_id,
            principal,
            quota.submissions_per_minute,
            quota.queued_runs if queued else 0,
            keys.SCHED_RESERVE_TTL_S * 1000,
            keys.SCHED_RATE_WINDOW_S * 1000,
            QUEUE_FULL_RETRY_MS,
        )
        if verdict == b"rate":
            raise QuotaExceeded(principal, "submissions_per_minute", quota.submissions_per_minute, retry_ms)
        if verdict == b"queued":
            raise QuotaExceeded(principal, "queued_runs", quota.queued_runs, retry_ms)

    async def enqueue(self, run_id: str, principal: str, *, concurrent_limit: int, hold_s: float) -> int:
        """Queue a run whose arq job is parked; returns how many runs were dispatched."""
        hold_ms = int((hold_s + keys.SCHED_HOLD_GRACE_S) * 1000)
        return int(await self._run("enqueue", run_id, principal, concurrent_limit, hold_ms))

    async def release(self, run_id: str) -> bool:
        """The run's worker is done with it: free its slot (idempotent) and dispatch."""
        freed, _ = await self._run("release", run_id)
        return bool(freed)

    async def advertise(self, worker: str, slots: int, ttl_s: float) -> int:
        """Offer `slots` slots until `ttl_s` from now (0 slots: withdraw); returns runs dispatched."""
        return int(await self._run("register", worker, slots, _now_ms() + int(ttl_s * 1000)))

    async def withdraw(self, run_id: str) -> str:
        """Take a run that has not started out of its queue ('pending' or 'dispatched'), or ''."""
        where = await self._run("withdraw", run_id, job_key_prefix + run_id, in_progress_key_prefix + run_id)
        return where.decode() if isinstance(where, bytes) else str(where)

    async def place(self, run_id: str) -> QueuePlace | None:
        """Where the run waits, or None if it is not waiting (running, finished, unknown)."""
        key = self._key
        owner: bytes | None = await self.redis.hget(key("owner"), run_id)  # type: ignore[misc]
        if owner is None:
            return None
        principal = owner.decode()
        now = _now_ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpos(keys.sched_pending(self.queue_name, principal), run_id)
            pipe.hget(key("running"), principal)
            pipe.hget(key("limits"), principal)
            pipe.zrangebyscore(key("workers"), now, "+inf")
            pipe.hgetall(key("slots"))
            pipe.zcard(key("inflight"))
            pipe.zcard(key("ring"))
            index, running, limit, live, slots, busy, waiting = await pipe.execute()
        return QueuePlace(
            state="pending" if index is not None else "dispatched",
            position=None if index is None else int(index) + 1,
            principal_running=int(running or 0),
            principal_limit=int(limit or 0),
            slots=sum(int(slots.get(w, 0)) for w in live),
            slots_busy=int(busy),
            principals_waiting=int(waiting),
        )

    def _key(self, name: str) -> str:
        return keys.sched_key(self.queue_name, name)
