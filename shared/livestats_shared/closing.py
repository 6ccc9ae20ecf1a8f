"""Ending a run: the closing events that leave nothing open, and `close_run`, which takes the run
from its owner and writes them.

A run ends in one atomic chunk (docs/contract.md, "Phase states and the end of a run"): a final
`call.failed` (reason `cancelled`) for each call not yet ended, a `phase.finished` for each phase
still running or never started, then `run.finished`. The publish script refuses a terminal chunk
that leaves a call in flight or a phase running, so every closer builds it here: the worker at
the end of its run, the cancel route, the stall monitor.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys
from .cluster import atomically
from .errors import PublishError, RunStateConflict
from .events import CallFailed, EventData, FailureReason, Outcome, PhaseFinished, RunFinished, phase_end_state
from .publish import Publisher
from .publish.gate import EventRefused, Lifecycle, RefusalCode
from .stats import phase_field

log = logging.getLogger("livestats.closing")
# A closer that loses a race (the owner wrote between its read and its write, or another closer
# took the run) reads again; each try takes the run first, so the owner cannot keep winning.
_TRIES = 30


class CloseFailed(PublishError):
    """The run could not be closed after several tries (another producer kept changing it): like
    an outage, trying again later is the answer."""


def closing_events(
    life: Lifecycle,
    stats: Mapping[str, str],
    verdict: RunFinished,
    *,
    now_ms: int,
    note: str,
) -> list[EventData]:
    """The events that end every open call and phase, then `verdict` (the run.finished).

    `stats` is the run's stats hash (for the phases' counts), `note` the excerpt each closed
    call gets (say what happened to its processes only if the closer knows)."""
    events: list[EventData] = []
    closed_in: dict[str, int] = {}
    for call in life.calls:
        started = call.started_ms if call.in_flight else None
        duration = max(0, now_ms - started) / 1000 if started is not None else 0.0
        events.append(
            CallFailed(
                phase=call.phase,
                call=call.call,
                attempt=call.attempt,
                reason=FailureReason.CANCELLED,
                excerpt=note,
                duration_s=round(duration, 3),
                final=True,
                started=call.in_flight,
            )
        )
        closed_in[call.phase] = closed_in.get(call.phase, 0) + 1
    state = phase_end_state(verdict.outcome)
    for phase in life.phases:
        if phase.state == "ended":
            continue
        done = int(stats.get(phase_field(phase.name, "done"), "0"))
        given_up = int(stats.get(phase_field(phase.name, "given_up"), "0"))
        started = phase.started_ms
        end = state
        if phase.state == "planned" and end == "finished":
            end = "cancelled"  # a phase that never ran did not finish
        events.append(
            PhaseFinished(
                phase=phase.name,
                index=max(phase.index, 0),
                succeeded=max(done - given_up, 0),
                given_up=given_up + closed_in.get(phase.name, 0),
                duration_s=round(max(0, now_ms - started) / 1000, 3) if started is not None else 0.0,
                state=end,
            )
        )
    events.append(verdict)
    return events


def timing(stats: Mapping[str, str], now_ms: int) -> tuple[float | None, float | None]:
    """(elapsed_s, remaining_s) at `now_ms` from the run's start and deadline, as a closer that is
    not the worker sees them: remaining = max(0, deadline - now), so elapsed + remaining equals
    the timeout while the deadline has not passed."""
    started, deadline = stats.get("started_ts"), stats.get("deadline_ts")
    elapsed = round(max(0, now_ms - int(started)) / 1000, 3) if started else None
    remaining = round(max(0, int(deadline) - now_ms) / 1000, 3) if deadline else None
    return elapsed, remaining


async def read_run(redis: Redis, run_id: str) -> tuple[dict[str, str], Lifecycle]:
    """The stats hash and the lifecycle of a run, read together (one slot: one hash tag)."""

    def read(pipe: Pipeline) -> None:
        pipe.hgetall(keys.run_stats(run_id))
        pipe.hgetall(keys.run_lifecycle(run_id))

    raw_stats, raw_life = await atomically(redis, keys.run_stats(run_id), read)
    return _text(raw_stats), Lifecycle.from_hash(_text(raw_life))


async def close_run(
    redis: Redis,
    publisher: Publisher,
    run_id: str,
    outcome: Outcome,
    reason: str,
    detail: str,
    *,
    allowed: tuple[str, ...],
    note: str,
) -> tuple[str | None, bool]:
    """End a run as its new owner: take the run (a new epoch fences the old owner out), read what
    is open, write the closing chunk guarded by that epoch. Returns (status after, whether this
    call wrote the end). A run not in `allowed` is left as it is (its status is returned; None
    for no run). Raises CloseFailed if it kept losing races, PublishError if Redis is away."""
    for attempt in range(_TRIES):
        if attempt:
            # Two closers (cancel and stall, two gateways) each take a new epoch and fence the
            # other out: a random pause that grows breaks the symmetry of a livelock.
            await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 8)))
        status = await redis.hget(keys.run_stats(run_id), "status")  # type: ignore[misc]
        if status is None or status.decode() not in allowed:
            return (None if status is None else status.decode()), False
        epoch = await redis.hincrby(keys.run_lifecycle(run_id), "epoch", 1)  # type: ignore[misc]
        stats, life = await read_run(redis, run_id)
        if stats.get("status") not in allowed:
            continue
        now_ms = int(time.time() * 1000)
        elapsed, remaining = timing(stats, now_ms)
        verdict = RunFinished(outcome=outcome, reason=reason, detail=detail, elapsed_s=elapsed, remaining_s=remaining)
        events = closing_events(life, stats, verdict, now_ms=now_ms, note=note)
        try:
            await publisher.publish_all(run_id, events, guard=allowed, fence=str(epoch), ts=now_ms)
        except RunStateConflict:
            continue  # it left `allowed` meanwhile: read again
        except EventRefused as refused:
            if refused.code is RefusalCode.RANGE:
                raise
            log.info("closing run %s lost a race (%s); reading it again", run_id, refused)
            continue
        return outcome.value, True
    raise CloseFailed(f"run {run_id} changed under each of {_TRIES} attempts to close it")


def _text(h: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in h.items()}
