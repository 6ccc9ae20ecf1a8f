"""What the WebSocket and SSE endpoints share: the run check before a stream opens, and how a
stream fails (its WebSocket close code and the HTTP status, from the one map in failures.py;
docs/api.md, "WebSocket protocol"). An SSE stream that fails after its 200 reports the close code
in an `error` event; one that fails before answers the status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from livestats_shared.auth import Principal
from livestats_shared.ids import RunId
from starlette.requests import HTTPConnection

from ..access.auth import check_run_visible
from ..fanout.hub import Hub
from ..fanout.join import join
from ..fanout.subscriber import Subscriber
from ..fanout.wire import CloseCode
from .failures import failure_of

log = logging.getLogger("livestats.gateway.streams")


@dataclass(frozen=True)
class Refusal:
    code: CloseCode
    status: int  # HTTP
    reason: str


def refusal_for(exc: BaseException, transport: str) -> Refusal:
    """How `exc` ends a stream of `transport` ("ws", "sse"), by the one map in failures.py.
    Anything else is logged with its traceback and ends the stream as an internal error."""
    failure = failure_of(exc, transport)
    if failure is not None and failure.code is not None:
        return Refusal(failure.code, failure.status, failure.reason)
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
