"""Executing one run: phases in order, calls at bounded concurrency, heartbeats, and exactly
one `run.finished` whatever ends it (success, failure, timeout, cancel, worker shutdown).

The worker owns the run from its `run.started` (the publish script hands it an owner epoch,
sent with every later event) until the end. A cancel or a stall mark takes the run from it (a
new epoch; the closer writes the end itself). The worker learns it was fenced out from a refused
write, from the check before each attempt, or from the heartbeat's check, and then kills its
calls' processes and stops, writing nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from livestats_shared import keys
from livestats_shared.closing import closing_events, read_run
from livestats_shared.errors import LivestatsError, OutboxFull, PublishError, RunStateConflict
from livestats_shared.events import (
    CallFailed,
    CallSucceeded,
    EventData,
    FailureReason,
    Heartbeat,
    Outcome,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunStarted,
)
from livestats_shared.publish import EventRefused, Publisher, RefusalCode
from livestats_shared.redis_client import UNAVAILABLE
from livestats_shared.spec import PhaseSpec, RunSpec
from redis.asyncio import Redis

from .calls import CallContext, SpawnFailed, operator_env, phase_env, run_call
from .clock import RunClock
from .config import WorkerConfig
from .metrics import WorkerMetrics
from .retry import RetryBudget, RetryBudgetExhausted

log = logging.getLogger("livestats.worker")

# A cancellation this close to the deadline is the timeout (arq's wait_for and our own
# deadline fire within milliseconds of each other; which one wins is a race).
_DEADLINE_SLACK_S = 0.5
_CANCEL_CHECK_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)
_END_NOT_WRITTEN: tuple[type[Exception], ...] = (PublishError, *_CANCEL_CHECK_ERRORS)


class FencedOut(LivestatsError):
    """The run is no longer this worker's (cancelled, marked stalled, or finished by another)."""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    detail: str = ""


class RunExecution:
    def __init__(
        self,
        config: WorkerConfig,
        redis: Redis,
        publisher: Publisher,
        run_id: str,
        spec: RunSpec,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or WorkerMetrics.for_config(config)
        self.redis = redis
        self.publisher = publisher
        self.run_id = run_id
        self.spec = spec
        self.clock = RunClock.start(min(spec.timeout_s, config.run_timeout_s))
        self.budget = RetryBudget(spec.retry_budget)
        self.pids: set[int] = set()
        self.calls_given_up = 0
        self._cancel_reason: str | None = None
        self._task: asyncio.Task[object] | None = None
        self.epoch = ""  # owner epoch from run.started: the fence on every later write
        self.fenced: str | None = None  # why the run is no longer ours, once it is not
        self._stopping = False  # the run's end is being handled: no second cancel

    def emit(self, data: EventData) -> None:
        self.publisher.emit(self.run_id, data, fence=self.epoch, on_refused=lambda r: self._refused(data, r))

    def _refused(self, data: EventData, refusal: EventRefused) -> None:
        """The gate refused one of our fire-and-forget events (called on the publisher's loop)."""
        if refusal.owner_lost:
            self._fence_out(refusal.message)
            return
        log.error("run %s: %s", self.run_id, refusal)
        if refusal.code is RefusalCode.RANGE and isinstance(data, CallSucceeded):
            # The answer's usage would take a run total past 2^53-1: the attempt fails instead,
            # which also closes it for the gate.
            self.emit(
                CallFailed(
                    phase=data.phase,
                    call=data.call,
                    attempt=data.attempt,
                    reason=FailureReason.INVALID_USAGE,
                    excerpt=refusal.message[:200],
                    duration_s=data.duration_s,
                    final=True,
                )
            )

    def _fence_out(self, why: str) -> None:
        """The run is not ours any more: stop, and write nothing more."""
        if self.fenced is None:
            self.fenced = why
            log.warning("run %s: fenced out (%s); killing its calls and stopping", self.run_id, why)
        self._stop()

    def _stop(self) -> None:
        """Cancel the run's task, once: that kills every call's processes (run_fpf)."""
        if not self._stopping and self._task is not None and not self._task.done():
            self._stopping = True
            self._task.cancel()

    async def _still_ours(self) -> None:
        """Before a process starts: the run must still be running under our epoch. One round trip
        per attempt; after a pause (SIGSTOP, a VM freeze) it is what stops new calls at once.

        An answer that took longer than a heartbeat interval may predate a stall mark made while
        this process was paused mid-check, so it is asked again: the mark needs two intervals of
        silence. What remains is the instant between a fresh answer and the fork."""
        for _ in range(5):
            if self.fenced is not None:
                raise FencedOut(self.fenced)
            asked = time.monotonic()
            try:
                async with asyncio.timeout(2.0), self.redis.pipeline(transaction=False) as pipe:
                    pipe.hget(keys.run_stats(self.run_id), "status")
                    pipe.hget(keys.run_lifecycle(self.run_id), "epoch")
                    status, epoch = await pipe.execute()
            except _CANCEL_CHECK_ERRORS as exc:
                # Redis away: calls go on through outages (their events wait in the outbox); if
                # the run was taken meanwhile, the first refused write stops them.
                log.warning("run %s: cannot check ownership before a call (%s); going on", self.run_id, exc)
                return
            if status != b"running" or (epoch or b"").decode() != self.epoch:
                self._fence_out(f"run is {(status or b'gone').decode()} under epoch {(epoch or b'-').decode()}")
                raise FencedOut(self.fenced or "fenced out")
            if time.monotonic() - asked < self.config.heartbeat_interval_s:
                return
        log.warning("run %s: ownership checks keep taking over a heartbeat interval; going on", self.run_id)

    async def execute(self) -> str:
        """Run to the end and return the outcome. Re-raises CancelledError (arq must see it)."""
        try:
            started = await self.publisher.publish(
                self.run_id,
                RunStarted(
                    worker=self.config.worker_name,
                    timeout_s=self.clock.timeout_s,
                    deadline_ts=self.clock.deadline_wall_ms,
                    retry_budget=self.budget.limit,
                    heartbeat_s=self.config.heartbeat_interval_s,
                ),
                guard=("queued",),
                ts=self.clock.started_wall_ms,  # so started + timeout = deadline, exactly
            )
        except RunStateConflict as conflict:
            # Cancelled while queued, or a redelivered job for a run that already ran.
            log.warning("run %s not started: it is %s", self.run_id, conflict.status)
            return conflict.status or "unknown"
        self.epoch = started.epoch

        self.metrics.runs_started.inc()
        self.metrics.runs_in_progress.inc()
        self._task = asyncio.current_task()
        heartbeats = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.run_id}")
        prompt_dir = Path(tempfile.mkdtemp(prefix=f"livestats-{self.run_id}-", dir=self.config.work_dir))
        try:
            verdict = await self._run_phases(prompt_dir)
        except asyncio.CancelledError:
            self._stopping = True
            verdict = await self._why_cancelled()
            await self._finish(verdict)
            raise
        except Exception as exc:
            log.exception("run %s failed inside the worker", self.run_id)
            await self._finish(Verdict(Outcome.FAILED, "internal_error", f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            self._stopping = True
            heartbeats.cancel()
            for result in await asyncio.gather(heartbeats, return_exceptions=True):
                if not isinstance(result, asyncio.CancelledError | type(None)):
                    log.error("run %s: heartbeat task failed", self.run_id, exc_info=result)
            shutil.rmtree(prompt_dir, ignore_errors=True)
            self.metrics.runs_in_progress.dec()
        await self._finish(verdict)
        return verdict.outcome.value

    async def _run_phases(self, prompt_dir: Path) -> Verdict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.clock.remaining()
        try:
            async with asyncio.timeout_at(deadline):
                for index, phase in enumerate(self.spec.phases):
                    await self._run_phase(index, phase, prompt_dir)
        except TimeoutError:
            return Verdict(Outcome.TIMED_OUT, "run_timeout", f"run exceeded its {self.clock.timeout_s:g} s timeout")
        except ExceptionGroup as group:  # from a phase's TaskGroup: the first call that stopped the run
            if group.subgroup(FencedOut) is not None:
                return Verdict(Outcome.CANCELLED, "fenced_out", self.fenced or "")
            for kind, reason in ((RetryBudgetExhausted, "retry_budget_exhausted"), (SpawnFailed, "spawn_error")):
                found = group.subgroup(kind)
                if found is not None:
                    if kind is RetryBudgetExhausted:
                        self.metrics.budget_exhausted.inc()
                    return Verdict(Outcome.FAILED, reason, str(found.exceptions[0]))
            raise
        if self.calls_given_up:
            detail = f"{self.calls_given_up} of {self.spec.planned_calls} calls failed after all attempts"
            return Verdict(Outcome.FAILED, "calls_given_up", detail)
        return Verdict(Outcome.SUCCEEDED, "completed", f"{self.spec.planned_calls} calls succeeded")

    async def _run_phase(self, index: int, phase: PhaseSpec, prompt_dir: Path) -> None:
        started = self.clock.elapsed()
        self.emit(
            PhaseStarted(
                phase=phase.name, index=index, calls=phase.calls, concurrency=phase.concurrency, **phase.estimate()
            )
        )
        ctx = CallContext(
            config=self.config,
            run_id=self.run_id,
            phase=phase,
            prompt_dir=prompt_dir,
            base_env=phase_env(operator_env(self.config), self.run_id, phase),
            budget=self.budget,
            backoff_base_s=self.spec.backoff_base_s,
            backoff_max_s=self.spec.backoff_max_s,
            emit=self.emit,
            before_attempt=self._still_ours,
            pids=self.pids,
            metrics=self.metrics,
            labels=self.metrics.labels_for(phase),
            prices=self.config.price_table(),
        )
        pending = iter(range(phase.calls))
        outcomes: list[bool] = []

        async def lane() -> None:
            for call in pending:  # lanes share one iterator: at most `concurrency` calls at once
                outcomes.append(await run_call(ctx, call))

        async with asyncio.TaskGroup() as group:
            for _ in range(min(phase.concurrency, phase.calls)):
                group.create_task(lane())
        failed = outcomes.count(False)
        self.calls_given_up += failed
        self.emit(
            PhaseFinished(
                phase=phase.name,
                index=index,
                succeeded=len(outcomes) - failed,
                given_up=failed,
                duration_s=round(self.clock.elapsed() - started, 3),
                actual_tokens=ctx.reported_tokens,
            )
        )

    async def _heartbeats(self) -> None:
        interval = self.config.heartbeat_interval_s
        loop = asyncio.get_running_loop()
        n = 1
        while True:
            await asyncio.sleep(max(0.0, self.clock.tick(n, interval) - loop.time()))
            n += 1
            beat = Heartbeat(
                elapsed_s=round(self.clock.elapsed(), 3),
                remaining_s=round(self.clock.remaining(), 3),
                in_flight=len(self.pids),
                pids=sorted(self.pids),
            )
            try:
                self.emit(beat)
            except OutboxFull as exc:
                log.error("run %s: heartbeat not recorded: %s", self.run_id, exc)
            reason = await self._cancel_requested()
            if reason is not None and self._task is not None:
                log.info("run %s: cancel requested (%s)", self.run_id, reason)
                self._cancel_reason = reason
                self._stop()
                return
            if self.fenced is not None:
                return

    async def _cancel_requested(self) -> str | None:
        """The cancel flag's reason, if set. Also notes (in `fenced`) a run that is no longer ours."""
        try:
            # Bounded: during an outage the client's own retries could otherwise hold up the
            # end of a run that is being timed out or shut down. Not asyncio.wait_for: on 3.11
            # it swallows a cancel that lands as the read completes, and the heartbeat task
            # then never stops (seen: a timed-out run that never finished).
            async with asyncio.timeout(2.0):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.get(keys.run_cancel(self.run_id))
                    pipe.hget(keys.run_stats(self.run_id), "status")
                    pipe.hget(keys.run_lifecycle(self.run_id), "epoch")
                    raw, status, epoch = await pipe.execute()
        except _CANCEL_CHECK_ERRORS as exc:
            log.warning("run %s: cannot check for a cancel request (%s); will retry", self.run_id, exc)
            return None
        if self.epoch and (status != b"running" or (epoch or b"").decode() != self.epoch):
            self._fence_out(f"run is {(status or b'gone').decode()} under epoch {(epoch or b'-').decode()}")
        return None if raw is None else raw.decode(errors="replace")

    async def _why_cancelled(self) -> Verdict:
        """Timeout, abort and shutdown all arrive as CancelledError: tell them apart."""
        reason = self._cancel_reason or await self._cancel_requested()
        if reason is not None:
            return Verdict(Outcome.CANCELLED, "cancel_requested", reason)
        if self.clock.remaining() <= _DEADLINE_SLACK_S:
            return Verdict(Outcome.TIMED_OUT, "run_timeout", f"run exceeded its {self.clock.timeout_s:g} s timeout")
        return Verdict(Outcome.CANCELLED, "worker_shutdown", f"worker {self.config.worker_name} stopped")

    async def _finish(self, verdict: Verdict) -> None:
        """Write the run's end as its owner: flush what the calls emitted, then close whatever is
        still open (calls waiting for a retry, phases not reached) and `run.finished` in one
        chunk. A fenced-out worker writes nothing: the run's new owner wrote its end."""
        # Counted before the end is written, so a scrape that sees the end sees the count.
        self.metrics.run_finished(Outcome.CANCELLED if self.fenced else verdict.outcome, self.clock.elapsed())
        if not await self.publisher.flush(self.config.flush_timeout_s):
            log.error(
                "run %s finished %s but %d events are still waiting for Redis",
                self.run_id,
                verdict.outcome.value,
                len(self.publisher.outbox),
            )
        if self.fenced is None:
            await self._write_end(verdict)
        if self.fenced is not None:
            log.warning("run %s: ended by its new owner, not by this worker (%s)", self.run_id, self.fenced)
            return
        log.info("run %s finished: %s (%s) %s", self.run_id, verdict.outcome.value, verdict.reason, verdict.detail)

    async def _write_end(self, verdict: Verdict) -> None:
        finished = RunFinished(
            outcome=verdict.outcome,
            reason=verdict.reason,
            detail=verdict.detail,
            elapsed_s=round(self.clock.elapsed(), 3),
            remaining_s=round(self.clock.remaining(), 3),
        )
        note = "run stopped before this call could run it again"
        try:
            stats, life = await read_run(self.redis, self.run_id)
            now_ms = self.clock.started_wall_ms + int(self.clock.elapsed() * 1000)
            events = closing_events(life, stats, finished, now_ms=now_ms, note=note)
            await self.publisher.publish_all(
                self.run_id, events, fence=self.epoch, timeout_s=self.config.flush_timeout_s
            )
        except EventRefused as refused:
            if refused.owner_lost:
                self._fence_out(refused.message)
            else:
                log.error("run %s: its end was refused: %s", self.run_id, refused)
        except _END_NOT_WRITTEN as exc:
            # The stall monitor ends the run once heartbeats stop.
            log.error("run %s: its end could not be written (%s)", self.run_id, exc)
