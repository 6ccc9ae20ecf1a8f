"""Cost, model comparison and estimator calibration over REST.

Every route reads only runs the caller may see. `GET /api/compare` reads the chosen runs'
events (at most `analysis_runs_max` runs, newest first); the calibration routes read the runs'
stats hashes only. Same errors as the rest of the API.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from livestats_shared.calibration import DEFAULT_BY, DIMENSIONS, MIN_SAMPLES, CalibratedPrediction, Calibration
from livestats_shared.calibration import calibrate as fit_calibration
from livestats_shared.calibration import predict as calibrated
from livestats_shared.comparison import Comparison, compare
from livestats_shared.errors import InvalidEvent, InvalidRunId
from livestats_shared.estimation import EstimationSample, run_samples
from livestats_shared.events import Complexity, Event
from livestats_shared.history import iter_events
from livestats_shared.ids import RunId, validate_run_id
from livestats_shared.pricing import PriceVersion
from livestats_shared.selection import RunFilter
from livestats_shared.stats import RunSnapshot
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from ..access.auth import Reader, check_run_visible
from ..state import app_state
from .paging import read_run_page
from .routing import AUTH_RESPONSES, NOT_FOUND, UNAVAILABLE_RESPONSE, invalid, known_errors

log = logging.getLogger("livestats.gateway.analysis")
router = APIRouter(dependencies=[Depends(known_errors)], tags=["analysis"])
_RESPONSES = {**AUTH_RESPONSES, **UNAVAILABLE_RESPONSE}


class Selection(BaseModel):
    """The filters of the runs an analysis covered, and how many it read."""

    runs_examined: int
    filter: RunFilter


class ComparisonReport(Comparison):
    selection: Selection


class CalibrationReport(Calibration):
    selection: Selection


class PriceTableView(BaseModel):
    models: dict[str, list[PriceVersion]] = Field(description="Price versions per model, oldest first.")


def _filter(
    since: Annotated[int | None, Query(ge=0, description="Created at or after, epoch ms.")] = None,
    until: Annotated[int | None, Query(ge=0, description="Created before, epoch ms.")] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    name: Annotated[str | None, Query(max_length=200, description="Substring of the run name.")] = None,
    tag: Annotated[str | None, Query(max_length=40)] = None,
) -> RunFilter:
    return RunFilter(since=since, until=until, owner=owner, name=name, tag=tag)


Filter = Annotated[RunFilter, Depends(_filter)]


async def _select(request: Request, principal: Reader, run_filter: RunFilter, limit: int) -> list[RunSnapshot]:
    state = app_state(request)
    limit = min(limit, state["config"].analysis_runs_max)

    def keep(stats: dict[str, str]) -> bool:
        return principal.can_see(stats.get("owner"), stats.get("team")) and run_filter.accepts(stats)

    runs, _ = await read_run_page(state["redis"], limit=limit, keep=keep, after=None)
    return runs


@router.get("/api/compare", responses={**_RESPONSES, **NOT_FOUND})
async def compare_models(
    request: Request,
    principal: Reader,
    run_filter: Filter,
    run: Annotated[list[str] | None, Query(description="Compare these runs (ids); else the newest that match.")] = None,
    model: Annotated[list[str] | None, Query(description="Only these models.")] = None,
    limit: Annotated[int, Query(ge=1, description="Newest matching runs to read (capped by the server).")] = 50,
) -> ComparisonReport:
    """Per model and phase across runs: calls, success rate, retries per call, latency p50/p95,
    tokens in and out, cost per successful call, estimation SMAPE and truncated attempts."""
    redis = app_state(request)["redis"]
    if run:
        ids: list[RunId] = []
        for r in run[: app_state(request)["config"].analysis_runs_max]:
            try:
                ids.append(validate_run_id(r))
            except InvalidRunId as exc:
                raise invalid("query", "run", r, str(exc)) from exc
        for run_id in ids:
            await check_run_visible(request, principal, run_id)
    else:
        ids = [RunId(s.run_id) for s in await _select(request, principal, run_filter, limit)]
    per_run: list[tuple[str, list[Event]]] = [(run_id, await _valid_events(redis, run_id)) for run_id in ids]
    report = compare(per_run, models=set(model) if model else None)
    return ComparisonReport(**dict(report), selection=Selection(runs_examined=len(ids), filter=run_filter))


async def _valid_events(redis: Redis, run_id: str) -> list[Event]:
    """The run's events; an entry that is not a livestats event (someone XADDed by hand) is
    logged and left out of the comparison rather than failing it."""

    def skip(exc: InvalidEvent) -> None:
        log.warning("compare: run %s: skipped an entry: %s", run_id, exc)

    return [e async for e in iter_events(redis, run_id, on_invalid=skip)]


def _dimensions(by: list[str] | None) -> tuple[str, ...]:
    chosen = tuple(by) if by else DEFAULT_BY
    unknown = [d for d in chosen if d not in DIMENSIONS]
    if unknown or len(set(chosen)) != len(chosen):
        raise invalid("query", "by", ",".join(chosen), f"stratify by distinct dimensions of {list(DIMENSIONS)}")
    return chosen


async def _calibration(
    request: Request, principal: Reader, run_filter: RunFilter, limit: int, by: list[str] | None, min_samples: int
) -> CalibrationReport:
    runs = await _select(request, principal, run_filter, limit)
    samples: list[EstimationSample] = [s for r in runs for s in run_samples(r) if s.complete]
    fitted = fit_calibration(samples, by=_dimensions(by), min_samples=min_samples)
    return CalibrationReport(**dict(fitted), selection=Selection(runs_examined=len(runs), filter=run_filter))


By = Annotated[list[str] | None, Query(description="Stratify by these: category, complexity, deliverables.")]
MinSamples = Annotated[int, Query(ge=1, le=1_000, description="Samples a stratum needs for its own factor.")]
Limit = Annotated[int, Query(ge=1, description="Newest matching runs to read (capped by the server).")]


@router.get("/api/calibration", responses={**_RESPONSES, 422: {"description": "Unknown stratification."}})
async def calibration(
    request: Request,
    principal: Reader,
    run_filter: Filter,
    by: By = None,
    min_samples: MinSamples = MIN_SAMPLES,
    limit: Limit = 500,
) -> CalibrationReport:
    """Correction factors per stratum (multiply a prediction by its factor) fitted over the
    complete phases of the matching runs, with leave-one-out cross-validated SMAPE before and
    after. The JSON is the export format `livestats report --calibrate --out` writes."""
    return await _calibration(request, principal, run_filter, limit, by, min_samples)


@router.get("/api/calibration/predict", responses={**_RESPONSES, 422: {"description": "Unknown stratification."}})
async def calibrated_prediction(
    request: Request,
    principal: Reader,
    run_filter: Filter,
    predicted_tokens: Annotated[int, Query(ge=0, le=2**53 - 1, description="The raw prediction.")],
    category: Annotated[str | None, Query(max_length=40)] = None,
    complexity: Complexity | None = None,
    deliverables: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    by: By = None,
    min_samples: MinSamples = MIN_SAMPLES,
    limit: Limit = 500,
) -> CalibratedPrediction:
    """A calibrated prediction for a described phase, from factors fitted over the matching runs."""
    fitted = await _calibration(request, principal, run_filter, limit, by, min_samples)
    phase: dict[str, object] = {"category": category, "complexity": complexity, "deliverables": deliverables}
    return calibrated(fitted, phase, predicted_tokens)


@router.get("/api/prices", responses=AUTH_RESPONSES)
async def prices(request: Request, principal: Reader) -> PriceTableView:
    """The operator's price table as this gateway loaded it (USD per million tokens)."""
    table = app_state(request)["prices"]
    return PriceTableView(models={m: table.versions(m) for m in table.models})
