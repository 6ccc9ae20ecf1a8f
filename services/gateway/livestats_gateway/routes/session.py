"""Browser login: a token exchanged for a server-side session, and who-am-I.

`livestats up` prints `http://127.0.0.1:PORT/login#token=...`. The token sits in the URL's
fragment, which browsers never send to a server, so it cannot reach an access log. The login
page's script (static/js/login.js) posts it to `POST /api/session`, which opens a session and
sets its cookie (an opaque session id, never the token: see livestats_shared.sessions), then
opens the dashboard.

A login never silently replaces another principal's session: with a live session in the
browser, `POST /api/session` answers 409 naming both principals, and the page asks the user
(switch, or stay). Only `replace: true` switches.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from livestats_shared.auth import Principal, Scope
from pydantic import BaseModel, Field

from ..access.auth import Reader, origin_allowed, served_over_https, session_cookie_name
from ..state import app_state
from .finite import FiniteJsonRoute
from .pages import SHELL_HEADERS
from .routing import AUTH_RESPONSES, MALFORMED_BODY, UNAVAILABLE_RESPONSE, known_errors
from .schemas import ErrorBody

router = APIRouter(tags=["session"], dependencies=[Depends(known_errors)], route_class=FiniteJsonRoute)
LOGIN_MAX_BYTES = 4_096  # a login body holds one token


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=512)
    replace: bool = Field(
        False, description="Replace the browser's live session even if it belongs to another token (a switch)."
    )


class Whoami(BaseModel):
    principal: str
    scopes: list[Scope]
    teams: list[str]


class SessionConflict(BaseModel):
    detail: str
    current: Whoami = Field(description="Who the browser is logged in as now.")
    offered: Whoami = Field(description="Who the presented token would log it in as.")


def _whoami(principal: Principal) -> Whoami:
    return Whoami(principal=principal.name, scopes=sorted(principal.scopes), teams=sorted(principal.teams))


@router.post(
    "/api/session",
    response_model=Whoami,
    max_body_size=LOGIN_MAX_BYTES,
    responses={
        401: {"model": ErrorBody, "description": "Unknown, revoked or expired token."},
        403: {"model": ErrorBody, "description": "The browser origin is not allowed."},
        409: {
            "model": SessionConflict,
            "description": "The browser is logged in with another token; send `replace: true` to switch.",
        },
        **MALFORMED_BODY,
        413: {"model": ErrorBody, "description": f"Body over {LOGIN_MAX_BYTES} bytes."},
        **UNAVAILABLE_RESPONSE,
    },
)
async def login(body: Annotated[Login, Body()], request: Request, response: Response) -> Whoami | JSONResponse:
    """Exchange a token for a session: an HttpOnly, SameSite=Strict cookie holding an opaque
    session id (for browsers)."""
    state = app_state(request)
    config = state["config"]
    if not origin_allowed(request, config):
        raise HTTPException(403, "origin not allowed")
    record = await state["tokens"].verify_record(body.token)
    if record is None:
        raise HTTPException(401, "invalid, revoked or expired token", headers={"WWW-Authenticate": "Bearer"})
    cookie = session_cookie_name(request, config)
    current_id = request.cookies.get(cookie)
    current = None if current_id is None else await state["sessions"].resolve(current_id)
    if current is not None and current.token_id != record.id and not body.replace:
        conflict = SessionConflict(
            detail=f"this browser is logged in as {current.principal.name}; send replace=true to switch",
            current=_whoami(current.principal),
            offered=_whoami(record.as_principal()),
        )
        return JSONResponse(conflict.model_dump(), status_code=409)
    if current_id is not None:
        await state["sessions"].end(current_id)  # a switch, or a fresh login: one session at a time
    session_id = await state["sessions"].create(record)
    response.set_cookie(
        cookie,
        session_id,
        max_age=int(config.session_max_s),  # the server ends it at its idle or absolute expiry
        httponly=True,  # page scripts (and injected ones) cannot read it
        samesite="strict",  # other sites' pages do not send it
        secure=served_over_https(request, config),  # required by the __Host- prefix
        path="/",
    )
    return _whoami(record.as_principal())


@router.get("/api/session", responses={**AUTH_RESPONSES, **UNAVAILABLE_RESPONSE})
async def whoami(principal: Reader) -> Whoami:
    """The principal behind the request's credentials."""
    return _whoami(principal)


@router.delete("/api/session", status_code=204, responses={**UNAVAILABLE_RESPONSE})
async def logout(request: Request, response: Response) -> Response:
    """End the browser's session (for every gateway at once; its open streams close within the
    re-check interval) and forget its cookie. A token stays valid until revoked or expired."""
    config = app_state(request)["config"]
    cookie = session_cookie_name(request, config)
    session_id = request.cookies.get(cookie)
    if session_id is not None:
        await app_state(request)["sessions"].end(session_id)
    secure = served_over_https(request, config)
    response.delete_cookie(cookie, path="/", secure=secure, httponly=True, samesite="strict")
    response.status_code = 204
    return response


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livestats: log in</title>
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css"></head>
<body><main class="login"><h1>livestats</h1><p id="msg" data-testid="login-message">Logging in&hellip;</p>
<p id="choice" hidden><button type="button" id="switch" data-testid="login-switch"></button>
<button type="button" id="stay" data-testid="login-stay"></button></p></main>
<script type="module" src="/static/js/login.js"></script></body></html>
"""


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page() -> HTMLResponse:
    """Reads the token from the URL fragment and logs the browser in."""
    return HTMLResponse(_LOGIN_PAGE, headers={**SHELL_HEADERS, "Cache-Control": "no-store"})
