"""Chunking and delta merging (pure): one script call per chunk must equal event-by-event."""

from __future__ import annotations

import asyncio
import random

from livestats_shared.events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    FailureReason,
    Heartbeat,
    PhasePlan,
    RunFinished,
    RunQueued,
    TokenUsage,
)
from livestats_shared.publish.chunks import MAX_CHUNK, cut, merge
from livestats_shared.publish.outbox import PendingEvent, Waiter
from livestats_shared.stats import apply, delta_for


def random_events(rng: random.Random, n: int) -> list:
    makers = [
        lambda i: CallStarted(phase="g", call=i, attempt=1, predicted_tokens=rng.randint(0, 9)),
        lambda i: CallSucceeded(
            phase="g", call=i, attempt=1, duration_s=0.1, bytes=9, usage=TokenUsage(input_tokens=i)
        ),
        lambda i: CallFailed(
            phase="g", call=i, attempt=1, reason=FailureReason.EMPTY, duration_s=0, final=rng.random() < 0.5
        ),
        lambda i: CallRetrying(phase="g", call=i, attempt=2, reason=FailureReason.EMPTY, delay_s=0),
        lambda i: Heartbeat(elapsed_s=i, remaining_s=1, in_flight=0, pids=[]),
    ]
    head = [RunQueued(name="x", planned_calls=n, phases=[PhasePlan(name="g", calls=n)], timeout_s=1)]
    tail = [RunFinished(outcome="succeeded", reason="completed")] if rng.random() < 0.5 else []
    return head + [rng.choice(makers)(i) for i in range(n)] + tail


def test_a_merged_delta_has_the_same_effect_as_applying_each_event_in_order():
    rng = random.Random(42)
    for trial in range(200):
        deltas = [delta_for(e, 1000 + i) for i, e in enumerate(random_events(rng, rng.randint(0, 40)))]
        one_by_one: dict[str, str] = {"last_error": "old"} if trial % 2 else {}
        merged = dict(one_by_one)
        for d in deltas:
            apply(one_by_one, d)
        apply(merged, merge(deltas))
        assert merged == one_by_one
        assert merge(deltas).finished == any(d.finished for d in deltas)


def pending(run_id: str, pseq: int, *, waiter: Waiter | None = None, guard: str = "", fence: str = "") -> PendingEvent:
    beat = Heartbeat(elapsed_s=0, remaining_s=0, in_flight=0, pids=[])
    return PendingEvent(run_id, beat.TYPE, 1, b"{}", delta_for(beat, 1), pseq, guard=guard, waiter=waiter, fence=fence)


async def test_chunks_keep_each_runs_order_isolate_awaited_groups_and_are_bounded():
    group = Waiter(asyncio.get_running_loop().create_future(), float("inf"), 2)
    batch = [
        pending("a", 1),
        pending("b", 2),
        pending("a", 3),
        pending("a", 4, waiter=group),
        pending("a", 5, waiter=group),
    ]
    batch += [pending("a", 6), pending("a", 7, fence="2")]
    batch += [pending("c", 10 + i) for i in range(MAX_CHUNK + 1)]
    batch.append(pending("b", 9000, guard="queued"))
    cuts = cut(batch)
    chunks = [(c.run_id, [i.pseq for i in c.items]) for c in cuts]
    assert chunks[:5] == [("a", [1, 3]), ("b", [2]), ("a", [4, 5]), ("a", [6]), ("a", [7])]
    assert [len(p) for r, p in chunks if r == "c"] == [MAX_CHUNK, 1]
    assert chunks[-1] == ("b", [9000])
    # Each chunk names the run's chunk before it, so the script defers it if that one was refused.
    assert [c.after for c in cuts[:5]] == [None, None, 3, 5, 6]
    assert cuts[-1].after == 2
