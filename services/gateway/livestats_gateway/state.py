"""The typed state the lifespan yields; routes reach it through `app_state(conn)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, cast

from livestats_shared.auth import TokenStore
from livestats_shared.pricing import PriceTable
from livestats_shared.publish import Publisher
from livestats_shared.sessions import SessionStore
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from .access.fairness import PerPrincipal
from .access.limits import ConnectionLimiter
from .config import GatewayConfig

if TYPE_CHECKING:
    from .fanout.hub import Hub
    from .fanout.index import RunIndex
    from .ops.layout_check import LayoutCheck
    from .ops.metrics import GatewayMetrics
    from .ops.stalls import StallMonitor


class State(TypedDict):
    config: GatewayConfig
    redis: Redis  # shared command client (REST, joins, snapshots); the hub reads on its own
    queue: Redis  # the queue server's client (submit, cancel, queue places); `redis` if the same
    layout: LayoutCheck  # the database's key layout, checked (for /readyz)
    publisher: Publisher  # submit, cancel, stalled marks
    hub: Hub
    index: RunIndex
    stalls: StallMonitor
    tokens: TokenStore  # who is asking (auth.py)
    sessions: SessionStore  # browser sessions behind the cookie (session.py)
    streams: ConnectionLimiter  # open WebSockets/SSE per principal
    replays: PerPrincipal  # history replays running at once per principal
    lists: PerPrincipal  # run list queries running at once per principal
    metrics: GatewayMetrics  # this process's registry, served at /metrics
    prices: PriceTable  # the operator's price table (GET /api/prices)


def app_state(conn: HTTPConnection) -> State:
    # Starlette copies the lifespan's state dict into every request's scope.
    return cast(State, conn.scope["state"])
