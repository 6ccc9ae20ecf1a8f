"""What the WebSocket and SSE endpoints share: the run check before a stream opens, and one map
from how a stream fails to its WebSocket close code and the HTTP status a REST call would get
(docs/api.md, "WebSocket protocol"). An SSE stream that fails after its 200 reports the close code in
an `error` event; one that fails before answers the status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from livestats_shared.auth import Principal
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import RunId
from livestats_shared.redis_client import UNAVAILABLE
from starlette.requests import HTTPConnection

from .auth import AuthError, check_run_visible
from .fanout.hub import Hub
from .fanout.join import join
from .fanout.subscriber import Subscriber, SubscriberClosed
from .fanout.wire import CloseCode, InvalidStreamId
from .limits import TooManyConnections

log = logging.getLogger("livestats.gateway.streams")


@dataclass(frozen=True)
class Refusal:
    code: CloseCode
    status: int  # HTTP
    reason: str


# Statuses of the gateway's own close codes (SubscriberClosed carries only the code).
_STATUS_OF = {
    CloseCode.GOING_AWAY: 503,
    CloseCode.UNSUPPORTED_DATA: 400,
    CloseCode.MESSAGE_TOO_BIG: 413,
    CloseCode.INTERNAL_ERROR: 500,
    CloseCode.TRY_AGAIN_LATER: 503,
    CloseCode.SLOW_CLIENT: 408,
    CloseCode.BAD_REQUEST: 422,  # FastAPI's status for a malformed query parameter
    CloseCode.UNAUTHORIZED: 401,
    CloseCode.FORBIDDEN: 403,
    CloseCode.NOT_FOUND: 404,
    CloseCode.INVALID_RUN_ID: 422,
    CloseCode.TOO_MANY_STREAMS: 429,
}


def refusal_for(exc: BaseException, transport: str) -> Refusal:
    """How `exc` ends a stream of `transport` ("ws", "sse"). Unexpected exceptions are logged with
    their traceback and end it as an internal error; Redis outages as 1013 / 503."""
    match exc:
        case SubscriberClosed():
            return Refusal(exc.code, _STATUS_OF[exc.code], exc.reason)
        case InvalidRunId():
            return Refusal(CloseCode.INVALID_RUN_ID, 422, str(exc))
        case InvalidStreamId():
            return Refusal(CloseCode.BAD_REQUEST, 422, f"since: {exc}")
        case UnknownRun():
            return Refusal(CloseCode.NOT_FOUND, 404, str(exc))
        case AuthError():
            return Refusal(
                CloseCode.UNAUTHORIZED if exc.status == 401 else CloseCode.FORBIDDEN, exc.status, exc.message
            )
        case TooManyConnections():
            return Refusal(CloseCode.TOO_MANY_STREAMS, 429, str(exc))
        case _ if isinstance(exc, UNAVAILABLE):
            log.warning("%s stream refused or ended, Redis unavailable: %s", transport, exc)
            return Refusal(CloseCode.TRY_AGAIN_LATER, 503, "redis unavailable; reconnect and resume")
    log.error("%s stream failed", transport, exc_info=exc)
    return Refusal(CloseCode.INTERNAL_ERROR, 500, "internal error")


async def check_run(conn: HTTPConnection, principal: Principal, hub: Hub, run_id: RunId) -> None:
    """Raise UnknownRun unless the run exists and the principal may see it (a run someone else
    owns answers like one that does not exist)."""
    await check_run_visible(conn, principal, run_id)
    await hub.run_hash(run_id)


async def join_visible(
    conn: HTTPConnection, principal: Principal, hub: Hub, sub: Subscriber, run_id: RunId, since: str | None
) -> None:
    """The join of a run the principal may see. Whether it exists is checked by the join itself
    (with the same `Hub.run_hash` as `check_run`): one Redis read fewer per WebSocket."""
    await check_run_visible(conn, principal, run_id)
    await join(hub, sub, run_id, since)
