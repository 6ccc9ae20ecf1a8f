"""The REST API: submit, list, read and cancel runs; health, readiness and metrics.

Run ids are validated before any Redis command. Known failures answer as HTTP errors with a
clear message (`routing.known_errors`): unknown run 404, Redis unavailable 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from livestats_shared import keys
from livestats_shared.auth import Scope
from livestats_shared.control import UnknownRun, cancel_run, submit_run
from livestats_shared.fpf_env import refused_env
from livestats_shared.history import read_snapshot
from livestats_shared.ids import NAME_PATTERN, RunId
from livestats_shared.quota import QuotaExceeded
from livestats_shared.redis_client import UNAVAILABLE
from livestats_shared.sched import Scheduler
from livestats_shared.spec import MAX_SPEC_BYTES, RunSpec

from ..access.auth import Reader, Submitter, check_run_visible
from ..ops.metrics import CONTENT_TYPE
from ..state import app_state
from .failures import RETRY_AFTER_S
from .finite import FiniteJsonRoute
from .paging import CURSOR_PATTERN, STREAM_ID_PATTERN, IndexPosition, exclusive_start, read_event_page, read_run_page
from .routing import (
    AUTH_RESPONSES,
    MALFORMED_BODY,
    NOT_FOUND,
    UNAVAILABLE_RESPONSE,
    ValidRunId,
    invalid,
    known_errors,
)
from .schemas import (
    Cancelled,
    ErrorBody,
    EventPage,
    Health,
    QueueInfo,
    Readiness,
    RunLinks,
    RunPage,
    RunStatus,
    RunView,
    Submitted,
)

log = logging.getLogger("livestats.gateway.api")

READY_PING_TIMEOUT_S = 1.0
RUN_RESPONSES = {**AUTH_RESPONSES, **NOT_FOUND, **UNAVAILABLE_RESPONSE}
router = APIRouter(dependencies=[Depends(known_errors)], route_class=FiniteJsonRoute)


@router.get("/healthz", tags=["health"])
async def healthz() -> Health:
    """The process is alive (no dependency is checked)."""
    return Health(status="alive")


@router.get(
    "/readyz",
    tags=["health"],
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `reason` says why."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Redis answers PING within a second and the background loops (stream reader, run index,
    stalled-run monitor) are running."""
    state = app_state(request)
    reason: str | None = None
    try:
        # asyncio.timeout, not wait_for: wait_for can lose a cancellation on Python 3.11.
        async with asyncio.timeout(READY_PING_TIMEOUT_S):
            await state["redis"].ping()
    except UNAVAILABLE as exc:
        reason = f"Redis unavailable ({type(exc).__name__}: {exc})"
    if reason is None:
        reason = state["layout"].not_ready()
    if reason is None and not state["hub"].alive():
        reason = "stream reader is not running"
    if reason is None and not state["index"].alive():
        reason = "run index reader is not running"
    if reason is None and not state["stalls"].alive():
        reason = "stalled-run monitor is not running"
    if reason is None:
        return JSONResponse(Readiness(status="ready").model_dump())
    return JSONResponse(
        Readiness(status="unavailable", reason=reason).model_dump(),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition, unauthenticated (aggregates only: docs/metrics.md). Generated on
    the event loop, so the counters are read consistently."""
    return Response(app_state(request)["metrics"].exposition(), media_type=CONTENT_TYPE)


@router.post(
    "/api/runs",
    status_code=202,
    tags=["runs"],
    max_body_size=MAX_SPEC_BYTES,
    responses={
        **AUTH_RESPONSES,
        **MALFORMED_BODY,
        413: {
            "model": ErrorBody,
            "description": f"Body over {MAX_SPEC_BYTES} bytes. Refused before it is read when its "
            "Content-Length says so, as plain text; as JSON when a chunked body grows too large.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        422: {"description": "Invalid spec, or one over the operator's limits (the field and the limit named)."},
        429: {
            "model": ErrorBody,
            "description": "Over the principal's submission rate or queued-run quota; retry after `Retry-After` s.",
        },
        **UNAVAILABLE_RESPONSE,
    },
)
async def submit(
    spec: RunSpec,
    principal: Submitter,
    request: Request,
    response: Response,
    team: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Share the run with this team (one of the caller's).")
    ] = None,
) -> Submitted:
    """Validate a run spec, record the run as queued (owned by the caller) and enqueue it for a
    worker."""
    if team is not None and team not in principal.teams and not principal.has(Scope.ADMIN):
        raise invalid("query", "team", team, f"{principal.name} is not in team {team!r}")
    state = app_state(request)
    refused = refused_env(spec.phases, state["config"].spec_env_allow)
    if refused:  # 422 naming each key, in FastAPI's own shape
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "phases", r.phase_index, "env", r.key),
                    "msg": r.reason,
                    "input": r.key,
                }
                for r in refused
            ]
        )
    quota = state["config"].quota_for(principal.name)
    over = quota.spec_violations(spec)
    if over:
        raise RequestValidationError(
            [
                {"type": "quota", "loc": ("body", *path.split(".")), "msg": msg, "input": value}
                for path, value, msg in over
            ]
        )
    try:
        run_id = await submit_run(
            state["redis"],
            state["publisher"],
            spec,
            queue=state["queue"],
            queue_name=state["config"].queue_name,
            owner=principal.name,
            team=team,
            quota=quota,
        )
    except QuotaExceeded as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    links = _links(request, run_id)
    response.headers["Location"] = links.self_
    return Submitted(run_id=run_id, status="queued", links=links)


def _links(request: Request, run_id: RunId) -> RunLinks:
    # Paths rather than URLs: right behind any proxy; root_path covers a mount under a prefix.
    root = request.scope.get("root_path", "")
    run = f"{root}/api/runs/{run_id}"
    return RunLinks(
        self_=run, events=f"{run}/events", stream=f"{run}/stream", ws=f"{root}/ws/runs/{run_id}", cancel=f"{run}/cancel"
    )


@router.get("/api/runs", tags=["runs"], responses={**AUTH_RESPONSES, **UNAVAILABLE_RESPONSE})
async def list_runs(
    request: Request,
    principal: Reader,
    status: Annotated[list[RunStatus] | None, Query(description="Only runs in these statuses (repeatable).")] = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="`next` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, description="Runs per page; capped by the server's `runs_page_max`.")] = 50,
) -> RunPage:
    """Runs the caller may see, newest first. A filtered page (a status filter, or a caller who
    sees only some runs) may hold fewer than `limit` runs while more follow: keep paging until
    `next` is null."""
    state = app_state(request)
    after: IndexPosition | None = None
    if cursor is not None:
        try:
            after = IndexPosition.decode(cursor)
        except ValueError as exc:
            raise invalid("query", "cursor", cursor, "not a cursor from this API: pass `next` unchanged") from exc
    limit = min(limit, state["config"].runs_page_max)
    wanted = set(status or ())

    def keep(stats: dict[str, str]) -> bool:
        return (not wanted or stats.get("status") in wanted) and principal.can_see(
            stats.get("owner"), stats.get("team")
        )

    admin = principal.has(Scope.ADMIN)
    # A principal who is not an admin reads only its own and its teams' indexes: the cost of its
    # list follows the runs it may see, not everyone's (keep still checks, as a second lock).
    indexes = (
        [keys.RUNS_INDEX]
        if admin
        else [keys.runs_by_owner(principal.name), *(keys.runs_by_team(t) for t in sorted(principal.teams))]
    )
    filtered = bool(wanted) or not admin
    async with state["lists"].hold(principal.name):  # fairness.py: a principal's lists take turns
        runs, position = await read_run_page(
            state["redis"], limit=limit, keep=keep if filtered else None, after=after, indexes=indexes
        )
    return RunPage(runs=runs, next=None if position is None else position.encode())


@router.get("/api/runs/{run_id}", tags=["runs"], responses=RUN_RESPONSES)
async def get_run(run_id: ValidRunId, principal: Reader, request: Request) -> RunView:
    """The run's current snapshot; while it is queued, `queue` says where it waits and why."""
    await check_run_visible(request, principal, run_id)
    state = app_state(request)
    snapshot = await read_snapshot(state["redis"], run_id)
    if snapshot is None:
        raise UnknownRun(run_id)
    place = None
    if snapshot.status == "queued":
        place = await Scheduler(state["queue"], state["config"].queue_name).place(run_id)
    queue = None if place is None else QueueInfo.model_validate(place.as_dict())
    return RunView.model_validate({**snapshot.model_dump(), "queue": queue})


@router.get(
    "/api/runs/{run_id}/events", tags=["runs"], responses={**AUTH_RESPONSES, **NOT_FOUND, **UNAVAILABLE_RESPONSE}
)
async def get_events(
    run_id: ValidRunId,
    principal: Reader,
    request: Request,
    after: Annotated[
        str | None, Query(pattern=STREAM_ID_PATTERN, description="Stream id; events strictly after it.")
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Events per page; capped by the server's `events_page_max`.")] = 1000,
) -> EventPage:
    """The run's history, oldest first. Stream entries that are not livestats events (added by
    hand) are left out and counted in `skipped`. `trimmed` and `gap` say when history the
    caller asked for is gone (docs/api.md, "Continuity")."""
    await check_run_visible(request, principal, run_id)
    state = app_state(request)
    start: str | None = "-"
    if after is not None:
        try:
            start = exclusive_start(after)
        except ValueError as exc:
            raise invalid("query", "after", after, str(exc)) from exc
    limit = min(limit, state["config"].events_page_max)
    page = await read_event_page(state["redis"], run_id, after=after, start=start, limit=limit)
    if page is None:
        raise UnknownRun(run_id)
    return page


@router.post(
    "/api/runs/{run_id}/cancel",
    status_code=202,
    tags=["runs"],
    responses={**AUTH_RESPONSES, **NOT_FOUND, **UNAVAILABLE_RESPONSE},
)
async def cancel(run_id: ValidRunId, principal: Submitter, request: Request) -> Cancelled:
    """Stop the run. A queued or running run ends `cancelled` at once (its calls in flight and open
    phases closed with it) and its worker is told to kill its calls; a finished run keeps its
    status (docs/contract.md, "Cancel")."""
    await check_run_visible(request, principal, run_id)
    state = app_state(request)
    status = await cancel_run(
        state["redis"],
        state["publisher"],
        run_id,
        queue=state["queue"],
        reason=f"cancelled through the API by {principal.name}",
        queue_name=state["config"].queue_name,
    )
    return Cancelled(run_id=run_id, status=status)
