"""External producers: `POST /api/runs/{id}/events` takes a batch of events for an external run.

A run opened with `POST /api/runs` and `"external": true` has no worker; whoever drives it (a
shell orchestrator with curl, `livestats watch`) sends its events here. Each event is checked
against the shared contract (`events.DATA_MODELS`, ranges included; `ts` within
`ingest_max_skew_s` of the gateway's clock), then the batch goes to the publish script as one
chunk, which checks it against the run's lifecycle (the same state machine as a worker's
events) and writes all of it or none. A batch is accepted whole or refused whole: 422 names
every invalid field (`loc` = body, events, index, data, field), 409 names the first event out
of order and what was expected. The publish script assigns `seq`; the producer sends only
`type`, `data` and optionally `ts`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from livestats_shared import keys
from livestats_shared.control import TERMINAL, UnknownRun
from livestats_shared.errors import RunStateConflict
from livestats_shared.events import DATA_MODELS, MAX_SAFE_INT, EventData, EventType
from livestats_shared.ids import RunId
from livestats_shared.publish import EventRefused, RefusalCode
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from ..access.auth import Submitter, check_run_visible
from ..state import app_state
from .finite import FiniteJsonRoute
from .routing import AUTH_RESPONSES, MALFORMED_BODY, NOT_FOUND, UNAVAILABLE_RESPONSE, ValidRunId, known_errors
from .schemas import ErrorBody

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
    ts: int | None = Field(
        None,
        ge=0,
        le=MAX_SAFE_INT,
        description="Epoch milliseconds, within `ingest_max_skew_s` of the gateway's clock; default: when the "
        "gateway receives it.",
    )


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
        409: {
            "model": ErrorBody,
            "description": "The run is not external or has finished, or an event is out of order for the run's "
            "lifecycle (the detail names its index and what was expected). Nothing of the batch is written.",
        },
        413: {"model": ErrorBody, "description": f"Over {INGEST_MAX_BYTES} bytes or `ingest_max_events` events."},
        **UNAVAILABLE_RESPONSE,
    },
)
async def ingest(run_id: ValidRunId, batch: IngestBatch, principal: Submitter, request: Request) -> Ingested:
    """Publish a batch of events of an external run, in order, all or nothing (needs the
    `submit` scope and a run the caller may see). One invalid event refuses the whole batch (422
    naming `events`, its index and the field); one out of order for the run's lifecycle refuses
    it too (409 naming its index). Nothing of a refused batch is written."""
    await check_run_visible(request, principal, run_id)
    state = app_state(request)
    config = state["config"]
    if len(batch.events) > config.ingest_max_events:
        raise HTTPException(
            413, f"batch has {len(batch.events)} events; at most {config.ingest_max_events} per request"
        )
    now = int(time.time() * 1000)
    payloads = _validated(batch, now, int(config.ingest_max_skew_s * 1000))
    await _check_open(state["redis"], run_id)
    stamps = [now if event.ts is None else event.ts for event in batch.events]
    try:
        # Guarded: a finish that races this batch (another request, the stall monitor) refuses it
        # whole, atomically with the write.
        written = await state["publisher"].publish_all(run_id, payloads, guard=_OPEN, ts=stamps)
    except RunStateConflict as conflict:
        raise HTTPException(409, f"run {run_id} is {conflict.status}; it takes no more events") from conflict
    except EventRefused as refused:
        raise _refusal(batch, refused) from refused
    return Ingested(run_id=run_id, accepted=len(payloads), last_seq=written.last_seq, last_id=written.last_id)


def _refusal(batch: IngestBatch, refused: EventRefused) -> Exception:
    """The publish script's refusal as an answer: 422 for a number out of range, else 409."""
    where = ("body", "events", refused.index)
    if refused.code is RefusalCode.RANGE:
        event = batch.events[refused.index]
        return RequestValidationError([_error(where, event.type, refused.message, "value_error.range")])
    return HTTPException(
        409,
        f"event {refused.index} ({refused.event_type}) refused: {refused.message}. Nothing of the batch was written.",
    )


def _validated(batch: IngestBatch, now_ms: int, skew_ms: int) -> list[EventData]:
    errors: list[dict[str, Any]] = []
    payloads: list[EventData] = []
    last = len(batch.events) - 1
    for i, event in enumerate(batch.events):
        where = ("body", "events", i)
        if event.ts is not None and abs(event.ts - now_ms) > skew_ms:
            errors.append(
                _error(
                    (*where, "ts"),
                    event.ts,
                    f"ts is {(event.ts - now_ms) / 1000:+.0f} s from the gateway's clock; at most "
                    f"{skew_ms / 1000:g} s either way (a clock far off would hide or fake a stall)",
                )
            )
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
    return {"type": kind, "loc": loc, "msg": message, "input": _renderable(value)}


def _renderable(value: object) -> object:
    """`value` as JSON can carry it back: NaN and Infinity (json.loads reads them) as text, or the
    422 that names them would fail to render (a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _renderable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_renderable(v) for v in value]
    return value


async def _check_open(redis: Redis, run_id: RunId) -> None:
    status, external = await redis.hmget(keys.run_stats(run_id), ["status", "external"])  # type: ignore[misc]
    if status is None:
        raise UnknownRun(run_id)
    if external != b"1":
        raise HTTPException(409, f"run {run_id} is not external: its worker publishes its events")
    if status.decode() in TERMINAL:
        raise HTTPException(409, f"run {run_id} has finished ({status.decode()}); it takes no more events")
