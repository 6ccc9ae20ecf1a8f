"""Starting and stopping runs: what the CLI and the gateway both do, defined once."""

from __future__ import annotations

import logging
import time

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from redis.asyncio import Redis

from . import keys
from .errors import LivestatsError, PublishError, RunStateConflict
from .events import Outcome, RunFinished, RunQueued
from .history import read_status
from .ids import RunId, new_run_id, validate_run_id
from .publish import NO_RUN, Publisher
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
    run_id: str | None = None,
    queue_name: str = keys.JOB_QUEUE,
    owner: str | None = None,
    team: str | None = None,
) -> RunId:
    """Record `run.queued` (refused if the id exists) and enqueue the arq job (job id = run id).
    An external run (`spec.external`) is only recorded: its producer publishes the rest.
    `owner` and `team` decide who sees the run through the gateway."""
    rid = validate_run_id(run_id) if run_id is not None else new_run_id()
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
        job = await ArqRedis(connection_pool=redis.connection_pool).enqueue_job(
            keys.RUN_JOB, rid, spec.model_dump_json(), _job_id=rid, _queue_name=queue_name
        )
        if job is None:
            raise PublishError(f"arq refused job {rid}: a job with this id already exists")
    except Exception as exc:
        # The run exists but nobody will execute it: say so in its own stream, then re-raise.
        await publisher.publish(rid, RunFinished(outcome=Outcome.FAILED, reason="enqueue_failed", detail=str(exc)))
        raise
    return rid


async def cancel_run(redis: Redis, publisher: Publisher, run_id: str, *, reason: str = "cancelled by user") -> str:
    """Ask a run to stop. Returns the run's status afterwards: `cancelled` at once for a queued
    run, `cancelling` for a running one (its worker kills the calls and finishes it), or the
    terminal status it already had."""
    rid = validate_run_id(run_id)
    status = await read_status(redis, rid)
    if status is None:
        raise UnknownRun(rid)
    if status in TERMINAL:
        return status
    # Flag first: the worker checks it on every heartbeat and when it is cancelled, so it can
    # tell a cancel from a timeout or a shutdown.
    await redis.set(keys.run_cancel(rid), reason, ex=keys.CANCEL_FLAG_TTL_S)
    try:
        await publisher.publish(
            rid, RunFinished(outcome=Outcome.CANCELLED, reason="cancel_requested", detail=reason), guard=("queued",)
        )
        status_after = Outcome.CANCELLED.value
    except RunStateConflict as conflict:
        if conflict.status in TERMINAL:
            return str(conflict.status)
        status_after = "cancelling"
    # arq's abort: a running job's task is cancelled within a poll; a queued one never starts.
    await redis.zadd(abort_jobs_ss, {rid: int(time.time() * 1000)})
    log.info("cancel requested for run %s (%s): %s", rid, reason, status_after)
    return status_after
