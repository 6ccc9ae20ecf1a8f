"""Browser login: a token exchanged for an HttpOnly session cookie, and who-am-I.

`livestats up` prints `http://127.0.0.1:PORT/login#token=...`. The token sits in the URL's
fragment, which browsers never send to a server, so it cannot reach an access log. The login
page's script (static/js/login.js) posts it to `POST /api/session`, which sets the cookie, then
opens the dashboard.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from livestats_shared.auth import Principal, Scope
from pydantic import BaseModel, Field

from .auth import SESSION_COOKIE, Reader, origin_allowed
from .pages import SHELL_HEADERS
from .routing import AUTH_RESPONSES, MALFORMED_BODY, UNAVAILABLE_RESPONSE, known_errors
from .schemas import ErrorBody
from .state import app_state

router = APIRouter(tags=["session"], dependencies=[Depends(known_errors)])
SESSION_MAX_AGE_S = 7 * 24 * 3600  # the cookie; the token itself lives until revoked
LOGIN_MAX_BYTES = 4_096  # a login body holds one token


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=512)


class Whoami(BaseModel):
    principal: str
    scopes: list[Scope]
    teams: list[str]


def _whoami(principal: Principal) -> Whoami:
    return Whoami(principal=principal.name, scopes=sorted(principal.scopes), teams=sorted(principal.teams))


@router.post(
    "/api/session",
    max_body_size=LOGIN_MAX_BYTES,
    responses={
        401: {"model": ErrorBody, "description": "Unknown or revoked token."},
        403: {"model": ErrorBody, "description": "The browser origin is not allowed."},
        **MALFORMED_BODY,
        413: {"model": ErrorBody, "description": f"Body over {LOGIN_MAX_BYTES} bytes."},
        **UNAVAILABLE_RESPONSE,
    },
)
async def login(body: Annotated[Login, Body()], request: Request, response: Response) -> Whoami:
    """Exchange a token for an HttpOnly, SameSite=Strict session cookie (for browsers)."""
    state = app_state(request)
    if not origin_allowed(request, state["config"]):
        raise HTTPException(403, "origin not allowed")
    principal = await state["tokens"].verify(body.token)
    if principal is None:
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    response.set_cookie(
        SESSION_COOKIE,
        body.token,
        max_age=SESSION_MAX_AGE_S,
        httponly=True,  # page scripts (and injected ones) cannot read it
        samesite="strict",  # other sites' pages do not send it
        secure=state["config"].cookie_secure,
        path="/",
    )
    return _whoami(principal)


@router.get("/api/session", responses={**AUTH_RESPONSES, **UNAVAILABLE_RESPONSE})
async def whoami(principal: Reader) -> Whoami:
    """The principal behind the request's credentials."""
    return _whoami(principal)


@router.delete("/api/session", status_code=204)
async def logout(response: Response) -> Response:
    """Forget the session cookie (the token stays valid until revoked)."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    response.status_code = 204
    return response


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livestats: log in</title>
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css"></head>
<body><main class="login"><h1>livestats</h1><p id="msg">Logging in&hellip;</p></main>
<script type="module" src="/static/js/login.js"></script></body></html>
"""


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page() -> HTMLResponse:
    """Reads the token from the URL fragment and logs the browser in."""
    return HTMLResponse(_LOGIN_PAGE, headers={**SHELL_HEADERS, "Cache-Control": "no-store"})
