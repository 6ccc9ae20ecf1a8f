"""The gate (publish.lua) against a real server: lifecycle order, fencing, ranges, the end of a run.

Every refusal leaves the stream, the stats hash and the lifecycle hash exactly as they were;
every accepted write keeps the snapshot equal to the fold of the stream.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from livestats_shared import keys
from livestats_shared.closing import close_run, read_run
from livestats_shared.events import (
    MAX_SAFE_INT,
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    FailureReason,
    Heartbeat,
    Outcome,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
    TokenUsage,
)
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.publish import NO_RUN, EventRefused, Publisher, RefusalCode
from livestats_shared.stats import PRODUCER_PREFIX, RunSnapshot, fold


def queued(*phases: str) -> RunQueued:
    plan = [PhasePlan(name=p, calls=2) for p in phases or ("a",)]
    return RunQueued(name="gate", planned_calls=2 * len(plan), phases=plan, timeout_s=60)


def started() -> RunStarted:
    now = int(time.time() * 1000)
    return RunStarted(worker="w", timeout_s=60, deadline_ts=now + 60_000, retry_budget=3, heartbeat_s=1)


def call(kind: str, c: int = 0, attempt: int = 1, phase: str = "a", **kw):
    if kind == "start":
        return CallStarted(phase=phase, call=c, attempt=attempt, **kw)
    if kind == "ok":
        return CallSucceeded(phase=phase, call=c, attempt=attempt, duration_s=0.1, bytes=1, **kw)
    if kind == "retry":
        return CallRetrying(phase=phase, call=c, attempt=attempt, reason=FailureReason.EMPTY, delay_s=0)
    final = kw.pop("final", True)
    return CallFailed(phase=phase, call=c, attempt=attempt, reason=FailureReason.EMPTY, duration_s=0.1, final=final)


async def new_run(publisher: Publisher, *phases: str, start: bool = True) -> tuple[str, str]:
    run_id = new_run_id()
    await publisher.publish(run_id, queued(*phases), guard=(NO_RUN,))
    epoch = ""
    if start:
        epoch = (await publisher.publish(run_id, started(), guard=("queued",))).epoch
    return run_id, epoch


async def state(redis, run_id: str) -> tuple:
    """Everything the gate may change: the stream, the stats hash, the lifecycle hash."""
    return (
        await redis.xrange(keys.run_events(run_id)),
        await redis.hgetall(keys.run_stats(run_id)),
        await redis.hgetall(keys.run_lifecycle(run_id)),
    )


async def assert_snapshot_is_the_fold(redis, run_id: str) -> None:
    events = await read_events(redis, run_id)
    h = {k: v for k, v in (await read_stats_hash(redis, run_id)).items() if not k.startswith(PRODUCER_PREFIX)}
    assert h == fold(events)


OUT_OF_ORDER = {
    "call before run.started": (False, [call("start")], "needs a running run"),
    "undeclared phase": (True, [call("start", phase="ghost")], "not declared"),
    "attempt not increasing": (
        True,
        [call("start"), call("fail", final=False), call("start")],
        "attempts must increase",
    ),
    "attempt already in flight": (True, [call("start"), call("start", attempt=2)], "in flight"),
    "end of an attempt never started (in_flight < 0)": (True, [call("ok")], "no attempt 1 in flight"),
    "end of the wrong attempt": (True, [call("start"), call("ok", attempt=2)], "not 2"),
    "a call ended twice": (True, [call("start"), call("ok"), call("ok")], "has ended"),
    "retry without a failure": (True, [call("retry", attempt=2)], "needs a failed attempt"),
    "second run.started": (True, [started()], "needs a queued run"),
    "phase started twice": (True, [PhaseStarted(phase="a", index=0, calls=2, concurrency=1)] * 2, "started already"),
    "run.finished with a call in flight": (
        True,
        [call("start"), RunFinished(outcome=Outcome.SUCCEEDED, reason="done")],
        "in flight",
    ),
    "run.finished with a phase running": (
        True,
        [PhaseStarted(phase="a", index=0, calls=2, concurrency=1), RunFinished(outcome=Outcome.FAILED, reason="x")],
        "still running",
    ),
    "phase.finished with a call in flight": (
        True,
        [call("start"), PhaseFinished(phase="a", index=0, succeeded=0, given_up=0, duration_s=0)],
        "in flight",
    ),
}


@pytest.mark.parametrize("case", list(OUT_OF_ORDER))
async def test_out_of_order_events_are_refused_whole_and_change_nothing(redis, publisher, case):
    start, events, expected = OUT_OF_ORDER[case]
    run_id, _ = await new_run(publisher, start=start)
    before = await state(redis, run_id)
    with pytest.raises(EventRefused, match=expected) as refused:
        await publisher.publish_all(run_id, events)
    assert refused.value.code is RefusalCode.STATE
    assert refused.value.index == len(events) - 1, "the first event at fault is named"
    assert await state(redis, run_id) == before


async def test_nothing_is_written_after_run_finished(redis, publisher):
    run_id, _ = await new_run(publisher)
    await publisher.publish(run_id, RunFinished(outcome=Outcome.SUCCEEDED, reason="done"))
    before = await state(redis, run_id)
    for late in (Heartbeat(elapsed_s=1, remaining_s=1, in_flight=0, pids=[]), call("start"), started()):
        with pytest.raises(EventRefused) as refused:
            await publisher.publish(run_id, late)
        assert refused.value.code is RefusalCode.FINISHED and refused.value.owner_lost
    assert await state(redis, run_id) == before


async def test_a_refused_fire_and_forget_event_goes_to_its_producer_and_the_rest_of_its_chunk_is_written(
    redis, publisher
):
    run_id, _ = await new_run(publisher)
    refusals: list[EventRefused] = []
    batch = [call("start", 0), call("ok", 0), call("ok", 1), call("start", 1), call("ok", 1)]
    for data in batch:  # one chunk: emitted together, drained together
        publisher.emit(run_id, data, on_refused=refusals.append)
    assert await publisher.flush(5)
    assert [(r.event_type, r.code) for r in refusals] == [("call.succeeded", RefusalCode.STATE)]
    events = await read_events(redis, run_id)
    assert [(e.type, e.payload().call) for e in events[2:]] == [
        ("call.started", 0),
        ("call.succeeded", 0),
        ("call.started", 1),
        ("call.succeeded", 1),
    ], "the others are written, in order"
    await assert_snapshot_is_the_fold(redis, run_id)


async def test_a_counter_that_would_pass_2_to_the_53_is_refused_and_nothing_overflows(redis, publisher):
    run_id, _ = await new_run(publisher)
    big = TokenUsage(input_tokens=2**52, output_tokens=0)
    await publisher.publish_all(run_id, [call("start", 0), call("ok", 0, usage=big)])
    refusals: list[EventRefused] = []
    for data in (call("start", 1), call("ok", 1, usage=big), call("start", 2), call("ok", 2)):
        publisher.emit(run_id, data, on_refused=refusals.append)
    assert await publisher.flush(5)
    # 2^52 + 2^52 = 2^53 > 2^53-1: only that success is refused; the chunk was split to find it.
    assert [(r.event_type, r.code) for r in refusals] == [("call.succeeded", RefusalCode.RANGE)]
    snap = RunSnapshot.from_hash(run_id, await read_stats_hash(redis, run_id))
    assert (snap.input_tokens, snap.successful_calls, snap.in_flight) == (2**52, 2, 1)
    assert snap.total_tokens <= MAX_SAFE_INT
    await assert_snapshot_is_the_fold(redis, run_id)


@pytest.mark.cluster
async def test_a_fenced_out_owner_is_refused_and_the_closer_ends_every_open_call_and_phase(redis, publisher):
    run_id, epoch = await new_run(publisher, "a", "b")
    assert epoch == "1"
    await publisher.publish_all(
        run_id,
        [
            PhaseStarted(phase="a", index=0, calls=2, concurrency=2),
            call("start", 0),
            call("start", 1),
            call("fail", 1, final=False),
            call("retry", 1, attempt=2),
        ],
        fence=epoch,
    )
    status, wrote = await close_run(
        redis, publisher, run_id, Outcome.STALLED, "heartbeats_stopped", "test", allowed=("running",), note="closed"
    )
    assert (status, wrote) == ("stalled", True)
    with pytest.raises(EventRefused) as late:
        await publisher.publish(run_id, call("ok", 0), fence=epoch)
    assert late.value.owner_lost
    events = await read_events(redis, run_id)
    closing = [(e.type, e.data.get("phase"), e.data.get("state"), e.data.get("final")) for e in events[-5:]]
    assert closing == [
        ("call.failed", "a", None, True),  # attempt 1 of call 0, in flight
        ("call.failed", "a", None, True),  # call 1, waiting for attempt 2
        ("phase.finished", "a", "stalled", None),
        ("phase.finished", "b", "stalled", None),  # planned, never started
        ("run.finished", None, None, None),
    ]
    snap = RunSnapshot.from_hash(run_id, await read_stats_hash(redis, run_id))
    assert [(p.name, p.state) for p in snap.phases] == [("a", "stalled"), ("b", "stalled")]
    assert (snap.in_flight, snap.calls_given_up, snap.status) == (0, 2, "stalled")
    assert snap.elapsed_s is not None and snap.remaining_s is not None
    assert abs(snap.elapsed_s + snap.remaining_s - 60) < 0.05, "elapsed + remaining = timeout"
    await assert_snapshot_is_the_fold(redis, run_id)
    # A second closer (another gateway, a cancel) finds it ended and writes nothing.
    again = await close_run(redis, publisher, run_id, Outcome.CANCELLED, "x", "y", allowed=("running",), note="")
    assert again == ("stalled", False)


# -- races -----------------------------------------------------------------------------------


class SimWorker:
    """A worker as the gate sees it: fenced writes, fire-and-forget, stops once refused."""

    def __init__(self, publisher: Publisher, run_id: str, epoch: str, rng: random.Random) -> None:
        self.publisher, self.run_id, self.epoch, self.rng = publisher, run_id, epoch, rng
        self.lost = False
        self.wrong: list[EventRefused] = []  # refusals other than "the run is not yours": bugs

    def _refused(self, refusal: EventRefused) -> None:
        if not refusal.owner_lost:
            self.wrong.append(refusal)
        self.lost = True

    def emit(self, data) -> None:
        if not self.lost:
            self.publisher.emit(self.run_id, data, fence=self.epoch, on_refused=self._refused)

    async def run(self, redis, pause_s: float, outcome: Outcome) -> None:
        rng = self.rng
        self.emit(PhaseStarted(phase="a", index=0, calls=4, concurrency=4))
        for c in range(rng.randint(0, 4)):
            self.emit(call("start", c))
            roll = rng.random()
            if roll < 0.5:
                self.emit(call("ok", c))
            elif roll < 0.7:
                self.emit(call("fail", c, final=False))
                self.emit(call("retry", c, attempt=2))
            self.emit(Heartbeat(elapsed_s=1, remaining_s=1, in_flight=0, pids=[]))
            await asyncio.sleep(rng.random() * 0.002)
        await asyncio.sleep(pause_s)  # a SIGSTOP: the closers may take the run meanwhile
        await self.publisher.flush(5)
        if self.lost:
            return
        # The end, as the real worker writes it: whatever is still open, then run.finished.
        from livestats_shared.closing import closing_events

        stats, life = await read_run(redis, self.run_id)
        end = RunFinished(outcome=outcome, reason="sim", elapsed_s=1, remaining_s=0)
        events = closing_events(life, stats, end, now_ms=int(time.time() * 1000), note="worker end")
        try:
            await self.publisher.publish_all(self.run_id, events, fence=self.epoch)
        except EventRefused as refused:
            if not refused.owner_lost:
                self.wrong.append(refused)


async def closer(redis, pub, run_id: str, rng: random.Random, out: Outcome, allowed: tuple[str, ...]) -> None:
    """A cancel route or a stall monitor, arriving at a random moment."""
    await asyncio.sleep(rng.random() * 0.004)
    await close_run(redis, pub, run_id, out, out.value, "race", allowed=allowed, note="closed")


async def test_one_run_finished_under_every_race_of_worker_pause_cancel_deadline_stall_and_two_gateways(
    redis, redis_url
):
    from livestats_shared.redis_client import connect

    clients = [connect(redis_url, f"livestats.tests.gate{i}") for i in range(3)]
    pubs = [await Publisher(c).start() for c in clients]  # the worker's, and two gateways'
    worker_pub, gateway_a, gateway_b = pubs
    rng = random.Random(14)
    cases = 500
    try:
        for case in range(cases):
            run_id, epoch = await new_run(worker_pub)
            worker = SimWorker(worker_pub, run_id, epoch, rng)
            outcome = rng.choice([Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT])  # deadline: timed_out
            racers = [worker.run(redis, pause_s=rng.random() * 0.004, outcome=outcome)]

            if rng.random() < 0.6:
                racers.append(closer(redis, gateway_a, run_id, rng, Outcome.CANCELLED, ("queued", "running")))
            if rng.random() < 0.6:
                racers.append(closer(redis, gateway_a, run_id, rng, Outcome.STALLED, ("running",)))
            if rng.random() < 0.6:  # a second gateway's monitor, overlapping the first
                racers.append(closer(redis, gateway_b, run_id, rng, Outcome.STALLED, ("running",)))
            await asyncio.gather(*racers)
            assert worker.wrong == [], f"case {case}"
            for pub in pubs:
                assert await pub.flush(5)

            events = await read_events(redis, run_id)
            ends = [e for e in events if e.type == "run.finished"]
            assert len(ends) == 1, f"case {case}: {len(ends)} run.finished"
            assert events[-1].type == "run.finished", f"case {case}: an event after the end"
            snap = RunSnapshot.from_hash(run_id, await read_stats_hash(redis, run_id))
            assert snap.status == ends[0].data["outcome"] and snap.in_flight == 0, f"case {case}"
            assert all(p.state not in (None, "running") for p in snap.phases), f"case {case}: {snap.phases}"
            await assert_snapshot_is_the_fold(redis, run_id)
    finally:
        for pub, client in zip(pubs, clients, strict=True):
            await pub.close()
            await client.aclose()
