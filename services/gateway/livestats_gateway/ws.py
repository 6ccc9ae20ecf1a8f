"""WebSocket endpoints: `/ws/runs/{run_id}` (one run, history then live) and `/ws/runs`
(the run index, live). Protocol and close codes: README, "WebSocket protocol"."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from livestats_shared.auth import Principal, Scope
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import validate_run_id
from livestats_shared.redis_client import UNAVAILABLE
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .auth import AuthError, accepted_subprotocol, authenticate, check_run_visible, credential_of
from .join import join
from .limits import TooManyConnections
from .state import app_state
from .subscriber import Subscriber, SubscriberClosed
from .wire import WS, CloseCode, InvalidStreamId, now_ms

log = logging.getLogger("livestats.gateway.ws")
router = APIRouter()


@router.websocket("/ws/runs/{run_id}")
async def run_socket(websocket: WebSocket, run_id: str, since: str | None = None) -> None:
    state = app_state(websocket)
    async with _admitted(websocket) as principal:
        if principal is None:
            return

        async def visible_join() -> None:
            rid = validate_run_id(run_id)  # before any Redis command
            await check_run_visible(websocket, principal, rid)
            await join(state["hub"], sub, rid, since)

        sub = Subscriber(WS, state["config"].client_queue_bytes)
        async with state["hub"].connection(sub):
            await _session(websocket, sub, visible_join())


@router.websocket("/ws/runs")
async def index_socket(websocket: WebSocket) -> None:
    state = app_state(websocket)
    async with _admitted(websocket) as principal:
        if principal is None:
            return
        sub = Subscriber(WS, state["config"].client_queue_bytes)
        async with state["hub"].connection(sub), state["index"].subscription(sub):
            await _session(websocket, sub, state["index"].join(sub, principal))


@asynccontextmanager
async def _admitted(websocket: WebSocket) -> AsyncIterator[Principal | None]:
    """Accept the socket and yield its principal, holding one of the principal's stream slots
    until the block ends; or close it with a code that says why and yield None. (A browser sees
    close codes, never the status of a refused handshake.)"""
    state = app_state(websocket)
    refusal: tuple[int, str] | None = None
    with ExitStack() as slot:
        try:
            principal = await authenticate(websocket, Scope.READ)
            slot.enter_context(state["streams"].hold(principal.name))
        except AuthError as exc:
            refusal = (CloseCode.UNAUTHORIZED if exc.status == 401 else CloseCode.FORBIDDEN, exc.message)
        except TooManyConnections as exc:
            refusal = (CloseCode.TOO_MANY_STREAMS, str(exc))
        except UNAVAILABLE as exc:
            log.warning("websocket refused, Redis unavailable: %s", exc)
            refusal = (CloseCode.TRY_AGAIN_LATER, "redis unavailable; reconnect")
        await websocket.accept(subprotocol=accepted_subprotocol(websocket))
        if refusal is not None:
            await websocket.close(code=refusal[0], reason=refusal[1][:120])
            yield None
        else:
            yield principal


async def _still_authorized(websocket: WebSocket) -> None:
    """Re-check the token every `auth_recheck_s`: revoking a token closes its open streams."""
    state = app_state(websocket)
    credential = credential_of(websocket)
    assert credential is not None  # _admitted authenticated it
    while True:
        await asyncio.sleep(state["config"].auth_recheck_s)
        try:
            interval = state["config"].auth_recheck_s
            principal = await state["tokens"].verify(credential.token, max_age_s=interval / 2)
        except UNAVAILABLE as exc:
            # An outage is not a revocation; the hub tells clients about outages itself.
            log.info("token re-check skipped, Redis unavailable: %s", exc)
            continue
        if principal is None:
            raise SubscriberClosed(CloseCode.UNAUTHORIZED, "token revoked")


async def _session(websocket: WebSocket, sub: Subscriber, joining: Coroutine[Any, Any, None]) -> None:
    """Run the join, the sender, the receiver and the token re-check together; the first one to
    end decides how the connection closes."""
    max_message = app_state(websocket)["config"].client_message_max_bytes
    joiner = asyncio.create_task(joining, name="ws-join")
    sender = asyncio.create_task(_send(websocket, sub), name="ws-send")
    receiver = asyncio.create_task(_receive(websocket, sub, max_message), name="ws-receive")
    watcher = asyncio.create_task(sub.wait_closed(), name="ws-watch")
    guard = asyncio.create_task(_still_authorized(websocket), name="ws-auth")
    pending: set[asyncio.Task[Any]] = {joiner, sender, receiver, watcher, guard}
    close: tuple[int, str] | None = None
    try:
        while close is None and pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = _close_for(task)
                if outcome is not None and close is None:
                    close = outcome
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if close is not None and close[0] == CloseCode.SLOW_CLIENT:
        app_state(websocket)["hub"].slow_disconnects += 1
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


_GONE = -1  # the client disconnected: nothing to send
_CLOSE_TIMEOUT_S = 5.0


def _close_for(task: asyncio.Task[Any]) -> tuple[int, str] | None:
    """How a finished task ends the session: (close code, reason), or None to carry on."""
    if task.cancelled():
        return (CloseCode.GOING_AWAY, "cancelled")
    exc = task.exception()
    match exc:
        case None:
            # The join finishing is normal; the sender or receiver finishing means the peer left.
            return None if task.get_name() == "ws-join" else (_GONE, "")
        case SubscriberClosed():
            return (exc.code, exc.reason)
        case WebSocketDisconnect():
            return (_GONE, "")
        case InvalidRunId():
            return (CloseCode.INVALID_RUN_ID, str(exc))
        case InvalidStreamId():
            return (CloseCode.BAD_REQUEST, f"since: {exc}")
        case UnknownRun():
            return (CloseCode.NOT_FOUND, str(exc))
        case _ if isinstance(exc, UNAVAILABLE):
            log.warning("websocket join failed, Redis unavailable: %s", exc)
            return (CloseCode.TRY_AGAIN_LATER, "redis unavailable; reconnect and resume")
    log.error("websocket session failed", exc_info=exc)
    return (CloseCode.INTERNAL_ERROR, "internal error")


async def _send(websocket: WebSocket, sub: Subscriber) -> None:
    while True:
        for frame in await sub.get():
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
