"""External producers: `POST /api/runs/{id}/events` takes a batch of events for an external run.

A run opened with `POST /api/runs` and `"external": true` has no worker; whoever drives it (a
shell orchestrator with curl, `livestats watch`) sends its events here. Each event is checked
against the shared contract (`events.DATA_MODELS`) before anything is written, so a batch is
accepted whole or refused whole with every fault named (422, `loc` = body, events, index, data,
field). The publish script assigns `seq`; the producer sends only `type`, `data` and optionally `ts`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from livestats_shared import keys
from livestats_shared.control import TERMINAL, UnknownRun
from livestats_shared.errors import RunStateConflict
from livestats_shared.events import DATA_MODELS, EventData, EventType
from livestats_shared.ids import RunId
from livestats_shared.publish import Published
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from .auth import Submitter, check_run_visible
from .finite import FiniteJsonRoute
from .routing import AUTH_RESPONSES, MALFORMED_BODY, NOT_FOUND, UNAVAILABLE_RESPONSE, ValidRunId, known_errors
from .schemas import ErrorBody
from .state import app_state

# A batch as JSON, bytes. Fixed per route (FastAPI checks it before the body is read).
INGEST_MAX_BYTES = 1 << 20
# The run already exists (POST /api/runs wrote it): a producer cannot queue it again.
_NOT_INGESTED = frozenset({"run.queued"})
_OPEN = ("queued", "running")  # statuses in which a run takes events

router = APIRouter(dependencies=[Depends(known_errors)], route_class=FiniteJsonRoute)


class IngestEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: EventType
    data: dict[str, Any] = Field(default_factory=dict, description="The payload of this event type.")
    ts: int | None = Field(None, ge=0, description="Epoch milliseconds; default: when the gateway receives it.")


class IngestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[IngestEvent] = Field(min_length=1, description="Published in this order.")


class Ingested(BaseModel):
    run_id: str
    accepted: int = Field(description="Events written.")
    last_seq: int = Field(description="`seq` of the last event of the batch.")
    last_id: str = Field(description="Stream id of the last event of the batch.")


@router.post(
    "/api/runs/{run_id}/events",
    tags=["runs"],
    max_body_size=INGEST_MAX_BYTES,
    responses={
        **MALFORMED_BODY,
        **AUTH_RESPONSES,
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "The run is not external, or has finished."},
        413: {"model": ErrorBody, "description": f"Over {INGEST_MAX_BYTES} bytes or `ingest_max_events` events."},
        **UNAVAILABLE_RESPONSE,
    },
)
async def ingest(run_id: ValidRunId, batch: IngestBatch, principal: Submitter, request: Request) -> Ingested:
    """Publish a batch of events of an external run, in order (needs the `submit` scope and a run
    the caller may see). Every event is validated first: one invalid event refuses the whole
    batch (422 naming `events`, its index and the field). A 503 (Redis away) may leave part of
    the batch to be written when Redis returns."""
    await check_run_visible(request, principal, run_id)
    state = app_state(request)
    limit = state["config"].ingest_max_events
    if len(batch.events) > limit:
        raise HTTPException(413, f"batch has {len(batch.events)} events; at most {limit} per request")
    payloads = _validated(batch)
    await _check_open(state["redis"], run_id)
    publisher = state["publisher"]
    now = int(time.time() * 1000)
    # Each event is guarded (the script refuses it once the run has finished, atomically with
    # the write), so a finish that races this batch (another request, the stall monitor) cuts
    # it cleanly. Tasks start in creation order, so the events enter the outbox in batch order;
    # the drain writes them in one pipeline.
    writes = [
        asyncio.ensure_future(publisher.publish(run_id, data, guard=_OPEN, ts=now if event.ts is None else event.ts))
        for event, data in zip(batch.events, payloads, strict=True)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    written = [r for r in results if isinstance(r, Published)]
    for r in results:
        if isinstance(r, RunStateConflict):
            raise HTTPException(
                409, f"run {run_id} finished ({r.status}) during this batch: {len(written)} of {len(results)} written"
            )
        if isinstance(r, BaseException):
            raise r
    return Ingested(run_id=run_id, accepted=len(written), last_seq=written[-1].seq, last_id=written[-1].id)


def _validated(batch: IngestBatch) -> list[EventData]:
    errors: list[dict[str, Any]] = []
    payloads: list[EventData] = []
    last = len(batch.events) - 1
    for i, event in enumerate(batch.events):
        where = ("body", "events", i)
        if event.type in _NOT_INGESTED:
            errors.append(_error((*where, "type"), event.type, "run.queued is written by POST /api/runs"))
            continue
        if event.type == "run.finished" and i != last:
            errors.append(_error((*where, "type"), event.type, "run.finished must be the last event of a batch"))
        try:
            payloads.append(DATA_MODELS[event.type].model_validate(event.data))  # type: ignore[arg-type]
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                errors.append(_error((*where, "data", *e["loc"]), e.get("input"), e["msg"], e["type"]))
    if errors:
        raise RequestValidationError(errors)
    return payloads


def _error(loc: tuple[str | int, ...], value: object, message: str, kind: str = "value_error") -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": message, "input": value}


async def _check_open(redis: Redis, run_id: RunId) -> None:
    status, external = await redis.hmget(keys.run_stats(run_id), ["status", "external"])  # type: ignore[misc]
    if status is None:
        raise UnknownRun(run_id)
    if external != b"1":
        raise HTTPException(409, f"run {run_id} is not external: its worker publishes its events")
    if status.decode() in TERMINAL:
        raise HTTPException(409, f"run {run_id} has finished ({status.decode()}); it takes no more events")
