"""Starting and stopping runs: what the CLI and the gateway both do, defined once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from arq.connections import ArqRedis
from redis.asyncio import Redis

from . import keys
from .closing import close_run
from .compat import request_abort
from .errors import LivestatsError, PublishError
from .events import Outcome, RunFinished, RunQueued
from .history import read_status
from .ids import RunId, new_run_id, validate_run_id
from .publish import NO_RUN, Publisher
from .quota import Quota
from .sched import Scheduler
from .spec import RunSpec

log = logging.getLogger("livestats.control")
TERMINAL = frozenset(o.value for o in Outcome)


class UnknownRun(LivestatsError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id}")


async def submit_run(
    redis: Redis,
    publisher: Publisher,
    spec: RunSpec,
    *,
    queue: Redis | None = None,
    run_id: str | None = None,
    queue_name: str = keys.JOB_QUEUE,
    owner: str | None = None,
    team: str | None = None,
    quota: Quota | None = None,
) -> RunId:
    """Admit the submission under `owner`'s quota (QuotaExceeded if refused), record
    `run.queued` (refused if the id exists), park the arq job (job id = run id) and queue the run
    in the fair-share scheduler, which dispatches it when its turn and a slot come.
    An external run (`spec.external`) is only recorded: its producer publishes the rest.
    `owner` and `team` decide who sees the run through the gateway. `queue` is the queue server's
    client (queue_server.py); None: the queue lives on `redis`, the telemetry server."""
    rid = validate_run_id(run_id) if run_id is not None else new_run_id()
    principal = owner or keys.LOCAL_PRINCIPAL
    limits = quota or Quota()
    queue = redis if queue is None else queue
    scheduler = Scheduler(queue, queue_name)
    await scheduler.admit(rid, principal, limits, queued=not spec.external)
    queued = RunQueued(
        name=spec.name,
        planned_calls=spec.planned_calls,
        phases=spec.plan(),
        timeout_s=spec.timeout_s,
        spec=spec.model_dump(mode="json"),
        owner=owner,
        team=team,
        tags=spec.tags,
    )
    await publisher.publish(rid, queued, guard=(NO_RUN,))
    if spec.external:
        return rid
    try:
        # Parked: due only when the scheduler dispatches it (a reservation left by a failure
        # here expires after keys.SCHED_RESERVE_TTL_S).
        job = await ArqRedis(connection_pool=queue.connection_pool).enqueue_job(
            keys.RUN_JOB,
            rid,
            spec.model_dump_json(),
            _job_id=rid,
            _queue_name=queue_name,
            _defer_until=datetime.now(UTC) + timedelta(seconds=keys.SCHED_PARK_S),
        )
        if job is None:
            raise PublishError(f"arq refused job {rid}: a job with this id already exists")
        await scheduler.enqueue(rid, principal, concurrent_limit=limits.concurrent_runs, hold_s=spec.timeout_s)
    except Exception as exc:
        # The run exists but nobody will execute it: say so in its own stream, then re-raise.
        await publisher.publish(rid, RunFinished(outcome=Outcome.FAILED, reason="enqueue_failed", detail=str(exc)))
        raise
    return rid


async def cancel_run(
    redis: Redis,
    publisher: Publisher,
    run_id: str,
    *,
    queue: Redis | None = None,
    reason: str = "cancelled by user",
    queue_name: str = keys.JOB_QUEUE,
) -> str:
    """Stop a run and return its status afterwards.

    A queued or running run ends `cancelled` at once: this call takes it from its worker (a new
    owner epoch: every later write of the worker is refused) and writes the closing chunk itself
    (each call in flight `call.failed` cancelled, each open phase `cancelled`, `run.finished`), so
    a paused or lost worker cannot delay it. The cancel flag and arq's abort then tell a live
    worker to kill its calls' processes. A `stalled` run stays `stalled` (a final status is never
    overwritten) but gets the flag and the abort too, so a worker that resumes stops. Any other
    finished run is left alone and its status returned. `queue`: as for `submit_run`."""
    rid = validate_run_id(run_id)
    status = await read_status(redis, rid)
    if status is None:
        raise UnknownRun(rid)
    if status in TERMINAL and status != Outcome.STALLED.value:
        return status
    # Flag first: a worker checks it on every heartbeat, and it survives a lost abort.
    await redis.set(keys.run_cancel(rid), reason, ex=keys.CANCEL_FLAG_TTL_S)
    status_after = status
    if status not in TERMINAL:
        note = f"run cancelled ({reason}); its worker is told to kill this call's processes"
        after, _ = await close_run(
            redis,
            publisher,
            rid,
            Outcome.CANCELLED,
            "cancel_requested",
            reason,
            allowed=("queued", "running"),
            note=note,
        )
        status_after = after or status
    # A run still waiting for a slot leaves its queue (and frees a dispatched slot), so it
    # costs nobody a turn; arq's abort covers the rest: a running job's task is cancelled
    # within a poll, one a worker already took never starts.
    queue = redis if queue is None else queue
    await Scheduler(queue, queue_name).withdraw(rid)
    await request_abort(queue, rid)
    log.info("cancel requested for run %s (%s): %s", rid, reason, status_after)
    return status_after
