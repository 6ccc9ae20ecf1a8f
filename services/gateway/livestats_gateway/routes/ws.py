"""WebSocket endpoints: `/ws/runs/{run_id}` (one run, history then live) and `/ws/runs`
(the run index, live). Protocol and close codes: docs/api.md, "WebSocket protocol"."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from livestats_shared.auth import Principal, Scope
from livestats_shared.ids import validate_run_id
from livestats_shared.redis_client import UNAVAILABLE
from starlette import types as asgi
from starlette.routing import BaseRoute, Match, WebSocketRoute
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..access.auth import AuthError, accepted_subprotocol, authenticate, credential_of
from ..access.limits import TooManyConnections
from ..fanout.direct import EXTENSION as DIRECT
from ..fanout.subscriber import Subscriber, SubscriberClosed
from ..fanout.wire import WS, WS_WIRE, CloseCode, coalesce, now_ms
from ..state import app_state
from .opening import join_visible, refusal_for

log = logging.getLogger("livestats.gateway.ws")


# Plain Starlette routes, not FastAPI's: FastAPI's WebSocket route solves dependencies and holds
# two exit stacks for the whole life of every socket (memory per idle connection: commit 97d824e).
async def run_socket(websocket: WebSocket) -> None:
    """`/ws/runs/{run_id}?since=<stream id>`: the run's history after `since`, then live."""
    state = app_state(websocket)
    run_id: str = websocket.path_params["run_id"]
    since = websocket.query_params.get("since")
    principal = await _admit(websocket)
    if principal is None:
        return
    try:
        sub = _subscriber(websocket)
        with state["hub"].connection(sub):
            await _session(websocket, sub, _visible_join(websocket, principal, sub, run_id, since))
    finally:
        state["streams"].release(principal.name)


async def _visible_join(
    websocket: WebSocket, principal: Principal, sub: Subscriber, run_id: str, since: str | None
) -> None:
    rid = validate_run_id(run_id)  # before any Redis command
    state = app_state(websocket)
    async with state["replays"].hold(principal.name):  # fairness.py: a principal's replays take turns
        await join_visible(websocket, principal, state["hub"], sub, rid, since)


async def index_socket(websocket: WebSocket) -> None:
    """`/ws/runs`: the run index, then its changes live."""
    state = app_state(websocket)
    principal = await _admit(websocket)
    if principal is None:
        return
    try:
        sub = _subscriber(websocket)
        state["index"].subscribe(sub)
        try:
            with state["hub"].connection(sub):
                await _session(websocket, sub, state["index"].join(sub, principal))
        finally:
            state["index"].unsubscribe(sub)
    finally:
        state["streams"].release(principal.name)


_ROUTES: list[BaseRoute] = [WebSocketRoute("/ws/runs/{run_id}", run_socket), WebSocketRoute("/ws/runs", index_socket)]
router = APIRouter(routes=_ROUTES)


class StreamsFirst:
    """ASGI middleware, outermost but for FastAPI's own three: a WebSocket for one of the routes
    above goes straight to its endpoint. Through the rest of the stack (exception middleware,
    exit stack, router, the route's exception wrapper) each connection kept a chain of frames
    and closures alive for as long as it stayed open, idle ones by the thousand. Nothing there
    applies to these sockets: they close with their own codes (routes/failures.py), and an
    error that escapes reaches uvicorn, which logs it and drops the connection, as before."""

    def __init__(self, app: asgi.ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] == "websocket":
            for route in _ROUTES:
                match, child = route.matches(scope)
                if match is Match.FULL and isinstance(route, WebSocketRoute):
                    scope.update(child)
                    await route.endpoint(WebSocket(scope, receive=receive, send=send))
                    return
        await self.app(scope, receive, send)


def _subscriber(websocket: WebSocket) -> Subscriber:
    """Written to directly where the server offers it (fanout/direct.py), else through ASGI by a
    sender task."""
    queue_bytes = app_state(websocket)["config"].client_queue_bytes
    sink = websocket.scope.get("extensions", {}).get(DIRECT)
    if sink is not None:
        return Subscriber(WS_WIRE, queue_bytes, _token(websocket), sink)
    return Subscriber(WS, queue_bytes, _token(websocket))


def _token(websocket: WebSocket) -> str:
    credential = credential_of(websocket)
    assert credential is not None  # _admit authenticated it
    return credential.token


async def _admit(websocket: WebSocket) -> Principal | None:
    """Accept the socket and return its principal, holding one of the principal's stream slots
    (the caller releases it); or close it with a code that says why and return None. (A browser
    sees close codes, never the status of a refused handshake.)"""
    state = app_state(websocket)
    try:
        principal = await authenticate(websocket, Scope.READ)
        state["streams"].acquire(principal.name)
    except _REFUSED as exc:
        refusal = refusal_for(exc, "ws")
    else:
        try:
            await websocket.accept(subprotocol=accepted_subprotocol(websocket))
        except BaseException:
            state["streams"].release(principal.name)
            raise
        return principal
    await websocket.accept(subprotocol=accepted_subprotocol(websocket))
    await websocket.close(code=refusal.code, reason=refusal.reason[:120])
    return None


async def _session(websocket: WebSocket, sub: Subscriber, joining: Coroutine[Any, Any, None]) -> None:
    """Run the join, the sender and the receiver together until one of them, or the gateway
    closing the subscription (slow client, revoked token, shutdown), ends the connection. An
    idle connection keeps one task, its receiver, or two with a sender (no direct path): the join
    ends once the client is live, and the token re-check is one loop per process (recheck.py)."""
    config = app_state(websocket)["config"]
    receiver = asyncio.create_task(_receive(websocket, sub, config.client_message_max_bytes), name="ws-receive")
    closing = sub.closing()
    # No reference to the join task is kept here: once it is done, nothing holds it.
    pending: set[asyncio.Future[Any]] = {asyncio.create_task(joining, name=_JOIN), receiver, closing}
    if not sub.direct:  # a direct subscriber writes its frames itself
        pending.add(asyncio.create_task(_send(websocket, sub, config.frame_max_events), name="ws-send"))
    close: tuple[int, str] | None = None
    try:
        while close is None and pending:
            close = await _first_close(pending)
    finally:
        pending.discard(closing)  # the subscriber's, not ours to cancel
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if close is not None and close[0] == CloseCode.SLOW_CLIENT:
        app_state(websocket)["metrics"].fanout.slow_disconnect()
    if close is not None and close[0] != _GONE and websocket.client_state == WebSocketState.CONNECTED:
        try:
            # Bounded: a client that stopped reading cannot take the close frame either (it gets
            # it if it reads again within the bound; after that uvicorn closes the transport).
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await websocket.close(code=close[0], reason=close[1][:120])
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # the peer left meanwhile
            log.debug("close after the peer left: %r", exc)
        except TimeoutError:
            log.info("client did not take its close frame (%s) within %s s; dropping it", close[0], _CLOSE_TIMEOUT_S)


_REFUSED: tuple[type[Exception], ...] = (AuthError, TooManyConnections, *UNAVAILABLE)
_GONE = -1  # the client disconnected: nothing to send
_JOIN = "ws-join"
_CLOSE_TIMEOUT_S = 5.0


async def _first_close(pending: set[asyncio.Future[Any]]) -> tuple[int, str] | None:
    """Wait for some of `pending` to finish and remove them; how the first of those ends the
    session, if one does."""
    done, still = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    pending.intersection_update(still)
    close = None
    for task in done:
        outcome = _close_for(task)
        if outcome is not None and close is None:
            close = outcome
    return close


def _close_for(task: asyncio.Future[Any]) -> tuple[int, str] | None:
    """How a finished task (or the subscriber's `closing()`) ends the session: (close code,
    reason), or None to carry on."""
    if task.cancelled():
        return (CloseCode.GOING_AWAY, "cancelled")
    exc = task.exception()
    if exc is None:
        if isinstance(closed := task.result(), SubscriberClosed):
            return (closed.code, closed.reason)  # the gateway ended the subscription
        # The join finishing is normal; the sender or receiver finishing means the peer left.
        return None if isinstance(task, asyncio.Task) and task.get_name() == _JOIN else (_GONE, "")
    if isinstance(exc, WebSocketDisconnect):
        return (_GONE, "")
    refusal = refusal_for(exc, "ws")
    return (refusal.code, refusal.reason)


async def _send(websocket: WebSocket, sub: Subscriber, max_events: int) -> None:
    while True:
        for frame in coalesce(await sub.get(), max_events):
            if isinstance(frame, str):
                await websocket.send_text(frame)
            else:
                await websocket.send_bytes(frame)


async def _receive(websocket: WebSocket, sub: Subscriber, max_bytes: int) -> None:
    """Client messages are small JSON controls: {"type": "ping"}. Anything else gets an error
    frame; a message over the size limit or a binary one closes the connection."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            raise SubscriberClosed(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported")
        if len(text) > max_bytes:
            raise SubscriberClosed(CloseCode.MESSAGE_TOO_BIG, f"messages are limited to {max_bytes} bytes")
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            sub.control("error", {"code": "malformed", "message": "messages must be JSON objects"})
            continue
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "ping":
            sub.control("pong", {"server_ts": now_ms(), "id": body.get("id")})
        else:
            sub.control("error", {"code": "unknown_type", "message": f"unknown message type {kind!r}; known: ping"})
