"""Executing one run: phases in order, calls at bounded concurrency, heartbeats, and exactly
one `run.finished` whatever ends it (success, failure, timeout, cancel, worker shutdown)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from livestats_shared import keys
from livestats_shared.errors import OutboxFull, RunStateConflict
from livestats_shared.events import (
    EventData,
    Heartbeat,
    Outcome,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunStarted,
)
from livestats_shared.publish import Publisher
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

    def emit(self, data: EventData) -> None:
        self.publisher.emit(self.run_id, data)

    async def execute(self) -> str:
        """Run to the end and return the outcome. Re-raises CancelledError (arq must see it)."""
        try:
            await self.publisher.publish(
                self.run_id,
                RunStarted(
                    worker=self.config.worker_name,
                    timeout_s=self.clock.timeout_s,
                    deadline_ts=self.clock.deadline_wall_ms,
                    retry_budget=self.budget.limit,
                    heartbeat_s=self.config.heartbeat_interval_s,
                ),
                guard=("queued",),
            )
        except RunStateConflict as conflict:
            # Cancelled while queued, or a redelivered job for a run that already ran.
            log.warning("run %s not started: it is %s", self.run_id, conflict.status)
            return conflict.status or "unknown"

        self.metrics.runs_started.inc()
        self.metrics.runs_in_progress.inc()
        self._task = asyncio.current_task()
        heartbeats = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.run_id}")
        prompt_dir = Path(tempfile.mkdtemp(prefix=f"livestats-{self.run_id}-", dir=self.config.work_dir))
        try:
            verdict = await self._run_phases(prompt_dir)
        except asyncio.CancelledError:
            verdict = await self._why_cancelled()
            await self._finish(verdict)
            raise
        except Exception as exc:
            log.exception("run %s failed inside the worker", self.run_id)
            await self._finish(Verdict(Outcome.FAILED, "internal_error", f"{type(exc).__name__}: {exc}"))
            raise
        finally:
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
                self._task.cancel()
                return

    async def _cancel_requested(self) -> str | None:
        try:
            # Bounded: during an outage the client's own retries could otherwise hold up the
            # end of a run that is being timed out or shut down. Not asyncio.wait_for: on 3.11
            # it swallows a cancel that lands as the read completes, and the heartbeat task
            # then never stops (seen: a timed-out run that never finished).
            async with asyncio.timeout(2.0):
                raw: bytes | None = await self.redis.get(keys.run_cancel(self.run_id))
        except _CANCEL_CHECK_ERRORS as exc:
            log.warning("run %s: cannot check for a cancel request (%s); will retry", self.run_id, exc)
            return None
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
        self.metrics.run_finished(verdict.outcome, self.clock.elapsed())
        self.emit(
            RunFinished(
                outcome=verdict.outcome,
                reason=verdict.reason,
                detail=verdict.detail,
                elapsed_s=round(self.clock.elapsed(), 3),
            )
        )
        if not await self.publisher.flush(self.config.flush_timeout_s):
            log.error(
                "run %s finished %s but %d events are still waiting for Redis",
                self.run_id,
                verdict.outcome.value,
                len(self.publisher.outbox),
            )
        log.info("run %s finished: %s (%s) %s", self.run_id, verdict.outcome.value, verdict.reason, verdict.detail)
