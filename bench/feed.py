"""Publishing the workload at a steady rate: through livestats' Publisher (what a worker does;
designs a, b and d read it), or through broadcaster's `publish` (design c).

Every event is a `call.started` (a new call each, so the gate takes it) whose `pid` carries the
moment it was handed to the publisher (bench/stamp.py: the contract caps a pid at 2^31-1, so
the stamp is microseconds modulo that), so a client can time it end to end; the feed also keeps
every event's send time by seq, for the polling design whose frames carry a snapshot's seq,
not events.

The publish gate takes calls only of a started run, for a declared phase, from the run's
owner: livestats runs are opened with run.queued (phase `bench`) and run.started, and every
event carries the epoch run.started returned as its fence.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import orjson
from broadcaster import Broadcast
from livestats_shared import keys
from livestats_shared.events import CallStarted, PhasePlan, RunQueued, RunStarted
from livestats_shared.publish import EventRefused, Publisher
from livestats_shared.redis_client import connect

from .alternatives.broadcast import channel
from .stamp import stamp

TICK_S = 0.001
PHASE = "bench"


class Feed:
    """Publishes to `runs` round-robin at `rate` events/s between `start` and `stop`."""

    def __init__(self, url: str, *, broadcaster: bool = False, maxlen: int | None = None) -> None:
        self.url = url
        self.broadcaster = broadcaster
        self.maxlen = maxlen  # each run's stream capped near this many entries (XADD MAXLEN ~)
        self.sent: dict[str, list[int]] = defaultdict(list)  # run -> send time (ns) of seq 1, 2, ...
        self.lag_s = 0.0  # how far the feed fell behind its schedule at worst
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None
        self._bc: Broadcast | None = None
        self._pub: Publisher | None = None
        self._epochs: dict[str, str] = {}  # run -> the owner epoch its run.started returned
        self._refusals: list[EventRefused] = []

    async def __aenter__(self) -> Feed:
        if self.broadcaster:
            self._bc = await Broadcast(self.url.replace("redis://", "redis-stream://", 1)).__aenter__()
        else:
            redis = connect(self.url, "livestats.bench.feed")
            if self.maxlen is None:
                self._pub = await Publisher(redis).start()
            else:
                self._pub = await Publisher(redis, stream_maxlen=self.maxlen).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._bc is not None:
            await self._bc.__aexit__()
        if self._pub is not None:
            await self._pub.close()
            await self._pub.redis.aclose()

    async def seed(self, runs: list[str]) -> None:
        """Open each run (run.queued, run.started: two untimed events), so the run exists before
        clients join (livestats refuses a run it has never seen: 4404) and the gate takes its
        calls."""
        if self._pub is None:
            return
        for run in runs:
            if run in self._epochs:
                continue
            plan = RunQueued(name="bench", planned_calls=0, phases=[PhasePlan(name=PHASE, calls=0)], timeout_s=86_400)
            await self._pub.publish(run, plan)
            start = RunStarted(worker="bench", timeout_s=86_400, deadline_ts=0, retry_budget=0, heartbeat_s=86_400)
            self._epochs[run] = (await self._pub.publish(run, start)).epoch
            self.sent[run] += [0, 0]

    async def fill(self, run: str, n: int) -> None:
        """`n` untimed events as fast as the publisher takes them (a history to replay)."""
        assert self._pub is not None
        await self.seed([run])
        for i in range(n):
            self._emit(run, None)
            if i % 1_000 == 999:
                await below(self._pub, 20_000)
        await self.flush()

    async def length(self, run: str) -> int:
        """How many events the run's stream holds now."""
        assert self._pub is not None
        return int(await self._pub.redis.xlen(keys.run_events(run)))

    async def flush(self) -> None:
        if self._pub is not None and not await self._pub.flush(60):
            raise RuntimeError("publisher did not flush within 60 s")
        if self._refusals:
            # Counted as published but never delivered: the figures would be wrong.
            raise RuntimeError(f"the publish gate refused {len(self._refusals)} bench events: {self._refusals[0]}")

    def start(self, runs: list[str], rate: float) -> None:
        self._stop.clear()
        self.lag_s = 0.0
        self._task = asyncio.create_task(self._pace(runs, rate))

    async def stop(self) -> int:
        """Stop, wait until every event is written; returns how many were published."""
        self._stop.set()
        assert self._task is not None
        n = await self._task
        await self.flush()
        return n

    def _emit(self, run: str, now: int | None) -> CallStarted:
        """A new call of `run` (its number: the event's position in the run), stamped with `now`
        (ns) unless None (untimed)."""
        sent = self.sent[run]
        data = CallStarted(phase=PHASE, call=len(sent), attempt=1, pid=None if now is None else stamp(now))
        sent.append(now or 0)
        if self._pub is not None:
            self._pub.emit(run, data, fence=self._epochs[run], on_refused=self._refusals.append)
        return data

    async def _pace(self, runs: list[str], rate: float) -> int:
        t0 = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            due = int((time.perf_counter() - t0) * rate)
            self.lag_s = max(self.lag_s, (due - i) / rate)
            while i < due:
                run = runs[i % len(runs)]
                now = time.time_ns()
                data = self._emit(run, now)
                if self._bc is not None:
                    await self._bc.publish(channel(run), _envelope(run, len(self.sent[run]), now, data))
                i += 1
            await asyncio.sleep(TICK_S)
        return i


async def below(pub: Publisher, n: int) -> None:
    """Let the drain catch up until at most `n` events wait (emit raises OutboxFull when full)."""
    while True:
        if len(pub.outbox) <= n:
            return
        await asyncio.sleep(0.001)


def _envelope(run: str, seq: int, now_ns: int, data: CallStarted) -> str:
    body = {"v": 1, "type": data.TYPE, "run_id": run, "seq": seq, "ts": now_ns // 1_000_000}
    return orjson.dumps({**body, "data": data.model_dump(mode="json")}).decode()
