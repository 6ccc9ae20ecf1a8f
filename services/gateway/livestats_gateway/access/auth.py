"""Who is asking, and may they: credentials, scopes, origins and run visibility.

Credentials, in the order they are looked for:
- `Authorization: Bearer <token>` (scripts, curl, the CLI);
- a WebSocket subprotocol `livestats.bearer.<token>` (browsers cannot set headers on a
  WebSocket; the gateway answers with the plain `livestats.v1`, never echoing the token);
- the session cookie that `POST /api/session` sets (the web UI): an opaque session id, never a
  token (sessions.py in the shared package). Over HTTPS it is `__Host-livestats_session` (Secure,
  bound to this exact host: a server on another port or a subdomain can neither read nor set
  it); over plain HTTP `livestats_session`. Only the name for the request's scheme is read.
A token never travels in a URL, so it cannot end up in an access log or a proxy's.

A cookie is sent by the browser whatever page asks, so cookie-authenticated WebSockets and
unsafe methods must come from an allowed `Origin` (this gateway's own, or `allowed_origins`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from livestats_shared import keys
from livestats_shared.auth import Principal, Scope, TokenStore
from livestats_shared.control import UnknownRun
from livestats_shared.errors import LivestatsError
from livestats_shared.ids import RunId
from livestats_shared.sessions import SessionStore
from starlette.requests import HTTPConnection

from ..config import GatewayConfig
from ..state import app_state

log = logging.getLogger("livestats.gateway.auth")

SESSION_COOKIE = "livestats_session"  # over plain HTTP
SECURE_SESSION_COOKIE = "__Host-livestats_session"  # over HTTPS: Secure, Path=/, no Domain
WS_PROTOCOL = "livestats.v1"
WS_BEARER_PREFIX = "livestats.bearer."
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Marks a session in the key an open stream is re-checked by (Credential.token). A NUL cannot
# occur in a header or subprotocol, so no bearer token can look like one.
_SESSION_KEY = "\0session:"


class AuthError(LivestatsError):
    """A request the gateway refuses: `status` is the HTTP status (401 or 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Credential:
    secret: str  # a token, or a session id from the cookie
    source: str  # "header", "subprotocol" or "cookie"

    @property
    def token(self) -> str:
        """What an open stream is re-checked by (recheck.py): the token, or the session id
        marked as one. Never logged."""
        return _SESSION_KEY + self.secret if self.source == "cookie" else self.secret


def served_over_https(conn: HTTPConnection, config: GatewayConfig) -> bool:
    # The scope's scheme reflects X-Forwarded-Proto when uvicorn trusts the proxy
    # (forwarded_allow_ips); `cookie_secure` covers a proxy that does not pass it on.
    return config.cookie_secure or conn.scope.get("scheme") in ("https", "wss")


def session_cookie_name(conn: HTTPConnection, config: GatewayConfig) -> str:
    return SECURE_SESSION_COOKIE if served_over_https(conn, config) else SESSION_COOKIE


def credential_of(conn: HTTPConnection) -> Credential | None:
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credential(value.strip(), "header")
    for proto in _subprotocols(conn):
        if proto.startswith(WS_BEARER_PREFIX):
            return Credential(proto.removeprefix(WS_BEARER_PREFIX), "subprotocol")
    cookie = conn.cookies.get(session_cookie_name(conn, app_state(conn)["config"]))
    if cookie:
        return Credential(cookie, "cookie")
    return None


def _subprotocols(conn: HTTPConnection) -> list[str]:
    if conn.scope["type"] != "websocket":
        return []
    return [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def accepted_subprotocol(conn: HTTPConnection) -> str | None:
    """The subprotocol to accept: ours if the client offered it (a browser that offered any
    subprotocol fails the handshake unless the server picks one of them)."""
    return WS_PROTOCOL if WS_PROTOCOL in _subprotocols(conn) else None


def origin_allowed(conn: HTTPConnection, config: GatewayConfig) -> bool:
    """No Origin (not a browser) or this gateway's own or one from `allowed_origins`."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    # The scope's scheme, not conn.url: that builds and caches a URL on every socket (~800 B).
    own_scheme = "https" if conn.scope.get("scheme") in ("https", "wss") else "http"
    own = f"{own_scheme}://{conn.headers.get('host', '')}"
    return origin == own or origin in config.allowed_origins


async def authenticate(conn: HTTPConnection, scope: Scope) -> Principal:
    """The principal behind the request, with at least `scope`; raises AuthError."""
    state = app_state(conn)
    credential = credential_of(conn)
    if credential is None:
        raise AuthError(401, "authentication required: send `Authorization: Bearer <token>`")
    browser_ambient = credential.source == "cookie" and (
        conn.scope["type"] == "websocket" or conn.scope.get("method") not in _SAFE_METHODS
    )
    if (browser_ambient or conn.scope["type"] == "websocket") and not origin_allowed(conn, state["config"]):
        raise AuthError(403, "origin not allowed")
    principal = await resolve(state["tokens"], state["sessions"], credential.token)
    if principal is None:
        what = "session ended or expired: log in again" if credential.source == "cookie" else "invalid or revoked token"
        raise AuthError(401, what)
    if not principal.has(scope):
        raise AuthError(403, f"this token lacks the `{scope}` scope")
    return principal


def is_session(key: str) -> bool:
    """Whether a `Credential.token` key stands for a browser session."""
    return key.startswith(_SESSION_KEY)


async def resolve(tokens: TokenStore, sessions: SessionStore, key: str, *, max_age_s: float = 0.0) -> Principal | None:
    """The principal behind a `Credential.token` key (a token, or a marked session id), or None
    if it no longer stands (revoked, expired, logged out). With `max_age_s`, lookups that recent
    may be reused (open streams' re-checks)."""
    if is_session(key):
        session = await sessions.resolve(key.removeprefix(_SESSION_KEY), max_age_s=max_age_s)
        return None if session is None else session.principal
    return await tokens.verify(key, max_age_s=max_age_s)


_bearer = HTTPBearer(auto_error=False, description="An API token: `livestats token create NAME --scope read`.")


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A route dependency: the caller's principal, with at least `scope`."""

    async def dependency(
        conn: HTTPConnection, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        # `_declared` only puts the bearer scheme in the OpenAPI document; credential_of reads it.
        try:
            return await authenticate(conn, scope)
        except AuthError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            raise HTTPException(exc.status, exc.message, headers=headers) from exc

    return dependency


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Submitter = Annotated[Principal, Depends(require(Scope.SUBMIT))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]


async def check_run_visible(conn: HTTPConnection, principal: Principal, run_id: RunId) -> None:
    """Raise UnknownRun (404) unless the principal may see the run: someone else's run answers
    exactly like one that does not exist, so run ids cannot be probed."""
    if principal.has(Scope.ADMIN):
        return
    request = app_state(conn)["redis"].hmget(keys.run_stats(run_id), ["owner", "team"])
    owner, team = await cast(Awaitable[list[bytes | None]], request)
    if not principal.can_see(_text(owner), _text(team)):
        raise UnknownRun(run_id)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
