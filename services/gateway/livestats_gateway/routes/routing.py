"""What every REST router shares: known failures as HTTP errors, 422s that name the parameter
at fault, the run-id path parameter, and the error responses the OpenAPI document declares."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path
from fastapi.exceptions import RequestValidationError
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import RunId, validate_run_id

from .failures import failure_of
from .schemas import ErrorBody

# Documents validate_run_id's rule in the OpenAPI schema; validate_run_id alone decides.
RUN_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

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


async def known_errors() -> AsyncGenerator[None, None]:
    """Known failures answer with a status and a message (failures.py), never a 500 with a
    traceback."""
    try:
        yield
    except Exception as exc:
        failure = failure_of(exc, "rest")
        if failure is None:
            raise
        raise HTTPException(failure.status, failure.reason, headers=failure.headers or None) from exc


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
