"""One map from a known failure to what each transport answers: the HTTP status of a REST call
(or of a stream refused before it opens) and the WebSocket close code of a stream (an SSE stream
that already answered 200 reports the code in an `error` event). docs/api.md lists them.

REST routes use it through `routing.known_errors`, the streams through `opening.refusal_for`;
nothing else maps an exception to a status or a close code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidRunId, PublishError, RunStateConflict
from livestats_shared.redis_client import UNAVAILABLE

from ..access.auth import AuthError
from ..access.limits import TooManyConnections
from ..fanout.subscriber import SubscriberClosed
from ..fanout.wire import CloseCode, InvalidStreamId

log = logging.getLogger("livestats.gateway.failures")

RETRY_AFTER_S = 2  # told to REST clients while Redis is unavailable
_UNREACHABLE: tuple[type[Exception], ...] = (*UNAVAILABLE, PublishError)


@dataclass(frozen=True)
class Failure:
    status: int  # HTTP
    code: CloseCode | None  # None: a failure no stream can meet (a stream that does ends as internal)
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


# Statuses of the gateway's own close codes (SubscriberClosed carries only the code).
STATUS_OF_CLOSE = {
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


def failure_of(exc: BaseException, transport: str) -> Failure | None:
    """What `exc` answers on `transport` ("rest", "ws", "sse"), or None when it is not a known
    failure (the caller lets it propagate, or ends the stream as an internal error)."""
    match exc:
        case SubscriberClosed():
            return Failure(STATUS_OF_CLOSE[exc.code], exc.code, exc.reason)
        case InvalidRunId():
            return Failure(422, CloseCode.INVALID_RUN_ID, str(exc))
        case InvalidStreamId():
            return Failure(422, CloseCode.BAD_REQUEST, f"since: {exc}")
        case UnknownRun():
            return Failure(404, CloseCode.NOT_FOUND, str(exc))
        case RunStateConflict():
            return Failure(409, None, str(exc))
        case AuthError():
            code = CloseCode.UNAUTHORIZED if exc.status == 401 else CloseCode.FORBIDDEN
            return Failure(exc.status, code, exc.message)
        case TooManyConnections():
            return Failure(429, CloseCode.TOO_MANY_STREAMS, str(exc))
        case _ if isinstance(exc, _UNREACHABLE):
            log.warning("%s answered as unavailable, Redis unreachable: %s: %s", transport, type(exc).__name__, exc)
            if transport == "rest":
                reason = f"Redis unavailable ({type(exc).__name__}); try again in a few seconds"
                return Failure(503, CloseCode.TRY_AGAIN_LATER, reason, {"Retry-After": str(RETRY_AFTER_S)})
            return Failure(503, CloseCode.TRY_AGAIN_LATER, "redis unavailable; reconnect and resume")
    return None
