"""`GET /api/runs/{run_id}/stream`: the run's feed as Server-Sent Events, for curl and for
proxies that block WebSockets. Same join as the WebSocket; resume with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from ..access.auth import Reader, credential_of
from ..access.fairness import PerPrincipal
from ..access.limits import ConnectionLimiter
from ..fanout.hub import Hub
from ..fanout.join import join
from ..fanout.stats import FanoutStats
from ..fanout.subscriber import Subscriber, SubscriberClosed
from ..fanout.wire import SSE, CloseCode, Frame, InvalidStreamId, parse_stream_id
from ..state import app_state
from .opening import check_run, refusal_for
from .paging import STREAM_ID_PATTERN
from .routing import AUTH_RESPONSES, NOT_FOUND, UNAVAILABLE_RESPONSE, ValidRunId, invalid, known_errors
from .schemas import ErrorBody

log = logging.getLogger("livestats.gateway.sse")
router = APIRouter(dependencies=[Depends(known_errors)])
_RETRY_MS = 1_000  # tells EventSource how soon to reconnect


@router.get(
    "/api/runs/{run_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "history, then live events"},
        **AUTH_RESPONSES,
        **NOT_FOUND,
        429: {"model": ErrorBody, "description": "The principal holds too many open streams on this gateway."},
        **UNAVAILABLE_RESPONSE,
    },
    summary="The run's events as Server-Sent Events (resume with Last-Event-ID)",
)
async def run_stream(
    request: Request,
    principal: Reader,
    rid: ValidRunId,
    since: str | None = Query(
        None, pattern=STREAM_ID_PATTERN, description="Stream id to resume after (Last-Event-ID wins)."
    ),
    last_event_id: str | None = Header(None, pattern=STREAM_ID_PATTERN),
) -> StreamingResponse:
    state = app_state(request)
    resume = last_event_id or since
    if resume:
        try:
            parse_stream_id(resume)
        except InvalidStreamId as exc:
            where, name = ("header", "last-event-id") if last_event_id else ("query", "since")
            raise invalid(where, name, resume, str(exc)) from exc
    # Checked before the 200 goes out, so a wrong id is a plain 404, not an empty stream.
    await check_run(request, principal, state["hub"], rid)
    streams = state["streams"]
    if streams.open_for(principal.name) >= streams.per_principal:
        raise HTTPException(429, f"{principal.name} already holds {streams.per_principal} open streams on this gateway")
    credential = credential_of(request)
    assert credential is not None  # the Reader dependency authenticated it
    # With its token, so that revoking it ends the stream (recheck.py), as it closes a WebSocket.
    sub = Subscriber(SSE, state["config"].client_queue_bytes, credential.token)
    return StreamingResponse(
        _events(state["hub"], state["metrics"].fanout, sub, rid, resume, streams, principal.name, state["replays"]),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    hub: Hub,
    stats: FanoutStats,
    sub: Subscriber,
    run_id: str,
    since: str | None,
    streams: ConnectionLimiter,
    principal: str,
    replays: PerPrincipal,
) -> AsyncIterator[bytes]:
    # The limit was checked before the 200; a burst of parallel requests can pass that check
    # together, so the slot taken here may go a few over, never unbounded.
    with streams.hold(principal, strict=False):
        async for chunk in _event_chunks(hub, stats, sub, run_id, since, replays.hold(principal)):
            yield chunk


async def _event_chunks(
    hub: Hub,
    stats: FanoutStats,
    sub: Subscriber,
    run_id: str,
    since: str | None,
    turn: AbstractAsyncContextManager[None],
) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % _RETRY_MS
    with hub.connection(sub):
        joiner = asyncio.create_task(_join_or_close(hub, sub, run_id, since, turn), name="sse-join")
        try:
            while True:
                try:
                    frames = await sub.get()
                except SubscriberClosed as closed:
                    if closed.code == CloseCode.SLOW_CLIENT:
                        stats.slow_disconnect()
                    yield _bytes(SSE.control("error", {"code": int(closed.code), "message": closed.reason}))
                    return
                yield b"".join(_bytes(f) for f in frames)
        finally:
            joiner.cancel()
            await asyncio.gather(joiner, return_exceptions=True)


async def _join_or_close(
    hub: Hub, sub: Subscriber, run_id: str, since: str | None, turn: AbstractAsyncContextManager[None]
) -> None:
    """Join in the principal's turn (fairness.py); if that fails, close the subscription with a
    code the stream reports."""
    try:
        async with turn:
            await join(hub, sub, run_id, since)
    except SubscriberClosed:
        return  # closed while replaying (slow client, shutdown): the stream reports it
    except Exception as exc:  # noqa: BLE001 - every failure ends the stream with its code (opening.py)
        refusal = refusal_for(exc, "sse")
        sub.close(refusal.code, refusal.reason)


def _bytes(frame: Frame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()
