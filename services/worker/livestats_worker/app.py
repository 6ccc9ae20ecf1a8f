"""The arq worker: one WorkerSettings-equivalent, typed state instead of arq's untyped ctx."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from arq.worker import func
from livestats_shared import keys
from livestats_shared.errors import LivestatsError
from livestats_shared.events import Outcome, RunFinished
from livestats_shared.ids import validate_run_id
from livestats_shared.publish import Publisher
from livestats_shared.publish.metrics import PublisherCollector
from livestats_shared.redis_client import UNAVAILABLE, connect
from livestats_shared.sched import Scheduler
from livestats_shared.spec import RunSpec
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from .arq_pool import create_named_pool
from .calls import env_refused_here
from .compat import HookedWorker
from .config import WorkerConfig
from .metrics import WorkerMetrics
from .run import RunExecution

log = logging.getLogger("livestats.worker")
_STATE = "livestats"


@dataclass(frozen=True)
class WorkerState:
    config: WorkerConfig
    redis: Redis  # the telemetry client (cancel flags, ownership checks); the publisher's too
    publisher: Publisher
    metrics: WorkerMetrics
    scheduler: Scheduler  # on arq's pool (the queue server): slots advertised and released


def state_of(ctx: dict[str, Any]) -> WorkerState:
    return cast(WorkerState, ctx[_STATE])


async def execute_run(ctx: dict[str, Any], run_id: str, spec_json: str) -> str:
    """The arq job: execute one run. The job id is the run id."""
    state = state_of(ctx)
    run_id = validate_run_id(run_id)
    try:
        return await _execute(state, run_id, spec_json)
    finally:
        # Shielded: a cancelled job (timeout, abort, shutdown) still frees its slot for the next.
        await asyncio.shield(_release_slot(state, run_id))


async def _release_slot(state: WorkerState, run_id: str) -> None:
    try:
        await state.scheduler.release(run_id)
    except UNAVAILABLE as exc:
        # The slot's hold deadline frees it instead (keys.SCHED_HOLD_GRACE_S past the run's timeout).
        log.warning("run %s: slot not released (%s); it frees at its hold deadline", run_id, exc)


async def _execute(state: WorkerState, run_id: str, spec_json: str) -> str:
    try:
        spec = RunSpec.model_validate_json(spec_json)
    except ValidationError as exc:
        # Enqueued by something that skipped validation: end the run visibly, not "queued" forever.
        log.error("run %s has an invalid spec: %s", run_id, exc)
        finished = RunFinished(outcome=Outcome.FAILED, reason="invalid_spec", detail=str(exc)[:2000])
        await state.publisher.publish(run_id, finished, guard=("queued",))
        state.metrics.run_finished(Outcome.FAILED, None)
        return Outcome.FAILED.value
    refused = env_refused_here(spec, state.config)
    if refused is not None:
        # The worker is the last word on its FPF environment, whatever the submitter checked.
        log.error("run %s refused: %s", run_id, refused)
        finished = RunFinished(outcome=Outcome.FAILED, reason="invalid_spec", detail=refused[:2000])
        await state.publisher.publish(run_id, finished, guard=("queued",))
        state.metrics.run_finished(Outcome.FAILED, None)
        return Outcome.FAILED.value
    return await RunExecution(state.config, state.redis, state.publisher, run_id, spec, state.metrics).execute()


# A connection lost while arq holds a WATCH surfaces as WatchError ("A ConnectionError occurred
# on while watching one or more keys"), not as ConnectionError; arq's own WATCH races are
# handled inside arq, so a WatchError reaching the poll loop is an outage too.
_POLL_OUTAGE: tuple[type[Exception], ...] = (*UNAVAILABLE, WatchError)


class WorkerStopping(LivestatsError):
    """Raised inside arq's poll loop to end it cleanly on shutdown."""


class ResilientWorker(HookedWorker):
    """arq's poll loop lets a connection error end the worker; ours waits for Redis to return.

    Running jobs are unaffected either way (their events wait in the publisher's outbox); this
    keeps the process alive so it picks up jobs again once Redis is back.
    """

    _redis_down_since: float | None = None
    _stop_polling = False

    def __init__(self, *, redis_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._redis_url = redis_url

    async def main(self) -> None:
        # Our pool, named for CLIENT LIST (arq_pool.py), before arq would create an unnamed one.
        if self._pool is None:
            self._pool = await create_named_pool(self._redis_url, self.queue_name)
        await super().main()

    def stop_polling(self) -> None:
        """End the poll loop at its next iteration (with WorkerStopping), never mid-command:
        cancelling arq inside a pipeline leaves a connection checked out."""
        self._stop_polling = True

    async def poll_once(self, poll: Callable[[], Awaitable[None]]) -> None:
        if self._stop_polling:
            raise WorkerStopping
        try:
            await poll()
        except _POLL_OUTAGE as exc:
            if self._redis_down_since is None:
                self._redis_down_since = time.monotonic()
                log.warning(
                    "Redis unavailable (%s: %s); worker keeps its runs going and retries", type(exc).__name__, exc
                )
            await asyncio.sleep(1.0)
            return
        if self._redis_down_since is not None:
            log.warning("Redis available again after %.1f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None


def _metrics_loop_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # Runs go on; the heartbeat gauge goes stale, which is what LivestatsWorkerStuck reports.
        log.error("worker metrics loop stopped: heartbeat and queue depth no longer update", exc_info=task.exception())


def _advertising_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("slot advertisement stopped: this worker gets no new runs", exc_info=task.exception())


async def advertise_forever(scheduler: Scheduler, config: WorkerConfig) -> None:
    """Offer this worker's slots to the scheduler every heartbeat, until cancelled. The offer
    outlives a few missed heartbeats; a worker that dies stops being counted after that."""
    ttl_s = config.heartbeat_interval_s * keys.SCHED_WORKER_TTL_INTERVALS
    while True:
        try:
            await scheduler.advertise(config.worker_name, config.max_runs, ttl_s)
        except UNAVAILABLE as exc:
            log.warning("slots not advertised (%s); retrying next heartbeat", exc)
        await asyncio.sleep(config.heartbeat_interval_s)


def create_worker(
    config: WorkerConfig, *, handle_signals: bool = True, metrics: WorkerMetrics | None = None
) -> ResilientWorker:
    """The arq worker. `metrics` is where it counts (a private registry if None)."""
    counts = metrics or WorkerMetrics.for_config(config)
    ticking: list[asyncio.Task[None]] = []

    async def on_startup(ctx: dict[str, Any]) -> None:
        client = connect(config.redis_url, "livestats.worker")
        publisher = Publisher(client, capacity=config.outbox_capacity, replica_ack=config.replica_ack())
        counts.registry.register(PublisherCollector(publisher))
        scheduler = Scheduler(ctx["redis"], config.queue_name)
        ctx[_STATE] = WorkerState(
            config=config, redis=client, publisher=await publisher.start(), metrics=counts, scheduler=scheduler
        )
        # The telemetry server is checked too when it is not the queue's.
        telemetry = client if config.queue_url != config.redis_url else None
        tick = counts.tick_forever(ctx["redis"], config.queue_name, config.heartbeat_interval_s, telemetry)
        task = asyncio.create_task(tick, name="worker-metrics")
        task.add_done_callback(_metrics_loop_ended)
        ticking.append(task)
        offer = asyncio.create_task(advertise_forever(scheduler, config), name="worker-slots")
        offer.add_done_callback(_advertising_ended)
        ticking.append(offer)
        log.info("worker %s ready on queue %s", config.worker_name, config.queue_name)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        for task in ticking:
            task.cancel()
        await asyncio.gather(*ticking, return_exceptions=True)  # a failure was logged when it happened
        state = ctx.get(_STATE)
        if isinstance(state, WorkerState):
            try:
                await state.scheduler.advertise(config.worker_name, 0, 0)
            except UNAVAILABLE as exc:
                log.warning("slots not withdrawn (%s); they expire with the advertisement", exc)
            await state.publisher.close(config.flush_timeout_s)
            await state.publisher.redis.aclose()

    return ResilientWorker(
        redis_url=config.queue_url,
        functions=[
            # max_tries=1: a job redelivered after a crash must not silently re-run a paid run;
            # the run is reported `stalled` from its missing heartbeats instead.
            func(execute_run, name=keys.RUN_JOB, timeout=config.run_timeout_s, max_tries=1),
        ],
        queue_name=config.queue_name,
        max_jobs=config.max_runs,
        allow_abort_jobs=True,
        # Cancellation by shutdown must end the run as `cancelled`, not re-queue it.
        retry_jobs=False,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=handle_signals,
        poll_delay=0.2,
        health_check_interval=10,
        keep_result=3600,
    )
