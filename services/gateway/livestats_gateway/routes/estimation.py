"""Token-estimation telemetry over REST: one run's samples and report, and a report across runs.

Samples come from the runs' stats hashes (see livestats_shared.estimation.run_samples): one
per phase that has a prediction and has ended. Both need the `read` scope and cover only runs
the caller may see. Same errors as the rest of the API: invalid id 422, unknown (or unseen)
run 404, Redis unavailable 503.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from livestats_shared.control import UnknownRun
from livestats_shared.estimation import DeclaredStrata, EstimationReport, EstimationSample, build_report, run_samples
from livestats_shared.history import read_snapshot
from pydantic import Field

from ..access.auth import Reader, check_run_visible
from ..state import app_state
from .paging import read_run_page
from .routing import AUTH_RESPONSES, NOT_FOUND, UNAVAILABLE_RESPONSE, ValidRunId, known_errors

router = APIRouter(dependencies=[Depends(known_errors)], tags=["estimation"])


class RunEstimation(EstimationReport):
    run_id: str
    status: str
    inputs: list[EstimationSample] = Field(description="The run's samples, one per ended phase with a prediction.")


class EstimationAcrossRuns(EstimationReport):
    runs_examined: int = Field(description="Runs read, newest first (at most `limit`, none created before `since`).")
    runs_with_samples: int


IncludeIncomplete = Annotated[
    bool, Query(description="Keep phases cut short by the end of their run (they used part of their tokens).")
]


@lru_cache(maxsize=4)
def declared_strata(setting: str | None) -> DeclaredStrata:
    """The operator's declared strata (LIVESTATS_GATEWAY_ESTIMATION_STRATA), or the defaults."""
    return DeclaredStrata() if setting is None else DeclaredStrata.model_validate_json(setting)


@router.get("/api/runs/{run_id}/estimation", responses={**AUTH_RESPONSES, **NOT_FOUND, **UNAVAILABLE_RESPONSE})
async def run_estimation(
    run_id: ValidRunId, principal: Reader, request: Request, include_incomplete: IncludeIncomplete = False
) -> RunEstimation:
    """Predicted against actual tokens of the run's phases so far: per sample SMAPE and waste
    ratio, the summary, and the same by category, complexity and deliverable count."""
    await check_run_visible(request, principal, run_id)
    snapshot = await read_snapshot(app_state(request)["redis"], run_id)
    if snapshot is None:
        raise UnknownRun(run_id)
    samples = run_samples(snapshot)
    report = build_report(samples, include_incomplete=include_incomplete)
    return RunEstimation(run_id=run_id, status=snapshot.status, inputs=samples, **dict(report))


@router.get("/api/estimation", responses={**AUTH_RESPONSES, **UNAVAILABLE_RESPONSE})
async def estimation_across_runs(
    request: Request,
    principal: Reader,
    since: Annotated[int | None, Query(ge=0, description="Only runs created at or after this time, epoch ms.")] = None,
    limit: Annotated[
        int, Query(ge=1, description="Newest runs to read; capped by the server's `runs_page_max`.")
    ] = 200,
    include_incomplete: IncludeIncomplete = False,
) -> EstimationAcrossRuns:
    """One report over the samples of the newest runs the caller may see (test samples listed
    apart)."""
    state = app_state(request)
    limit = min(limit, state["config"].runs_page_max)

    def visible(stats: dict[str, str]) -> bool:
        return principal.can_see(stats.get("owner"), stats.get("team"))

    runs, _ = await read_run_page(state["redis"], limit=limit, keep=visible, after=None)
    if since is not None:
        # Newest first: the runs created before `since` are the tail of the page.
        runs = [r for r in runs if r.created_ts is not None and r.created_ts >= since]
    per_run = [run_samples(r) for r in runs]
    declared = declared_strata(state["config"].estimation_strata)
    report = build_report(
        (s for samples in per_run for s in samples), include_incomplete=include_incomplete, declared=declared
    )
    return EstimationAcrossRuns(runs_examined=len(runs), runs_with_samples=sum(1 for s in per_run if s), **dict(report))
