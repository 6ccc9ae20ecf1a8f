"""JSON bodies hold finite numbers only: `NaN`, `Infinity`, `-Infinity` and literals that
overflow a double (`1e400`) are a 422, on every route, before any model sees them.

Python's `json.loads` (Starlette's `Request.json`) accepts all of them, pydantic float fields
take them, and Starlette's JSONResponse then refuses to render the 422 that echoes them (a 500
with a traceback). Here bodies are parsed with orjson, which refuses them, as it refuses lone
surrogates. The route class is FastAPI's documented hook for a custom request body parser;
`FiniteJsonRoute` must be the `route_class` of every router with a JSON body (a test walks
every route). `validation_error` renders any 422 even if a non-finite number reached it
(a query parameter, a future route).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_NON_FINITE = ("NaN", "Infinity", "-Infinity")


class FiniteJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise _explained(exc) from exc
        return self._json


def _explained(exc: orjson.JSONDecodeError) -> orjson.JSONDecodeError:
    """orjson says "unexpected character" for NaN: say what is wrong with it."""
    if exc.doc[exc.pos :].startswith(_NON_FINITE):
        return orjson.JSONDecodeError("NaN and Infinity are not JSON: numbers must be finite", exc.doc, exc.pos)
    return exc


class FiniteJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def finite_json_handler(request: Request) -> Response:
            return await handler(FiniteJsonRequest(request.scope, request.receive))

        return finite_json_handler


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, with any non-finite number in the echoed input written as a string."""
    assert isinstance(exc, RequestValidationError)  # registered for this type only
    return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
