"""What every REST router shares: known failures as HTTP errors, 422s that name the parameter
at fault, the run-id path parameter, and the error responses the OpenAPI document declares."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path
from fastapi.exceptions import RequestValidationError
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidRunId, PublishError, RunStateConflict
from livestats_shared.ids import RunId, validate_run_id
from livestats_shared.redis_client import UNAVAILABLE

from .schemas import ErrorBody

log = logging.getLogger("livestats.gateway.api")

RETRY_AFTER_S = 2  # told to clients while Redis is unavailable
# Documents validate_run_id's rule in the OpenAPI schema; validate_run_id alone decides.
RUN_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_UNREACHABLE: tuple[type[Exception], ...] = (*UNAVAILABLE, PublishError)

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No such run (or not one the caller may see)."}}
UNAVAILABLE_RESPONSE: Responses = {
    503: {"model": ErrorBody, "description": "Redis is unavailable; retry after `Retry-After` seconds."}
}
MALFORMED_BODY: Responses = {400: {"model": ErrorBody, "description": "The body is not valid JSON."}}
AUTH_RESPONSES: Responses = {
    401: {"model": ErrorBody, "description": "No token, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The token lacks the scope, or the browser origin is not allowed."},
}


async def known_errors() -> AsyncIterator[None]:
    """Known failures answer with a status and a message, never a 500 with a traceback."""
    try:
        yield
    except UnknownRun as exc:
        raise HTTPException(404, str(exc)) from exc
    except RunStateConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except _UNREACHABLE as exc:
        log.warning("answering 503, Redis unavailable: %s: %s", type(exc).__name__, exc)
        raise HTTPException(
            503,
            f"Redis unavailable ({type(exc).__name__}); try again in a few seconds",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc


def invalid(where: str, name: str, value: str, message: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the parameter at fault."""
    return RequestValidationError([{"type": "value_error", "loc": (where, name), "msg": message, "input": value}])


def _run_id(
    run_id: Annotated[str, Path(description="The run's id.", json_schema_extra={"pattern": RUN_ID_PATTERN})],
) -> RunId:
    try:
        return validate_run_id(run_id)
    except InvalidRunId as exc:
        raise invalid("path", "run_id", run_id, str(exc)) from exc


ValidRunId = Annotated[RunId, Depends(_run_id)]
