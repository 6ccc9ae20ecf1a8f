"""The gateway application: `create_app(config)` wires Redis, the hub and the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from livestats_shared.auth import SETTINGS_TOKEN_ID, Scope, TokenRecord, TokenStore, digest
from livestats_shared.pricing import load_price_table
from livestats_shared.publish import Publisher
from livestats_shared.publish.metrics import PublisherCollector
from livestats_shared.redis_client import UNAVAILABLE, connect, redact_url
from livestats_shared.sessions import SessionStore
from livestats_shared.visibility import backfill_visibility
from redis.asyncio import Redis

from .access.fairness import PerPrincipal
from .access.limits import ConnectionLimiter
from .access.private_port import PrivatePort
from .access.recheck import TokenRecheck
from .config import GatewayConfig
from .fanout.hub import Hub
from .fanout.index import RunIndex
from .listen import Slot
from .ops.layout_check import LayoutCheck
from .ops.metrics import GatewayMetrics
from .ops.stalls import StallMonitor
from .routes import analysis, api, apidocs, estimation, ingest, pages, session, sse, ws
from .routes.finite import validation_error
from .state import State

log = logging.getLogger("livestats.gateway")
BACKFILL_TIMEOUT_S = 10.0
_BACKFILL_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)


def create_app(config: GatewayConfig, slot: Slot | None = None) -> FastAPI:
    """The app of one gateway process; `slot` places it among the processes of a multi-process
    gateway (its `process` metrics label and private port), None for a lone process."""
    prices = load_price_table(config.prices_file, config.prices)  # a bad table stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            redis = connect(config.redis_url, "livestats.gateway", busy_loop=True)
            stack.push_async_callback(redis.aclose)
            queue = redis
            if config.queue_url != config.redis_url:
                queue = connect(config.queue_url, "livestats.gateway.queue", busy_loop=True)
                stack.push_async_callback(queue.aclose)
            layout = await stack.enter_async_context(LayoutCheck(redis))  # refused: no start
            await _backfill(redis)
            publishing = Publisher(redis, producer=None, replica_ack=config.replica_ack())
            publisher = await stack.enter_async_context(publishing)
            counts = GatewayMetrics(None if slot is None else slot.index)
            hub = await stack.enter_async_context(Hub(config, redis, counts.fanout))
            index = await stack.enter_async_context(RunIndex(config, redis, hub))
            stalls = await stack.enter_async_context(StallMonitor(config, redis, publisher))
            counts.watch(hub, stalls)
            counts.registry.register(PublisherCollector(publisher))
            tokens = TokenStore(redis, settings_tokens(config), config.tokens_file)
            sessions = SessionStore(redis, tokens, idle_s=config.session_idle_s, max_s=config.session_max_s)
            await stack.enter_async_context(TokenRecheck(config.auth_recheck_s, tokens, sessions, hub))
            queue_note = "" if queue is redis else f", queue {redact_url(config.queue_url)}"
            log.info("gateway ready (redis %s%s)", redact_url(config.redis_url), queue_note)
            yield State(
                config=config,
                redis=redis,
                queue=queue,
                layout=layout,
                publisher=publisher,
                hub=hub,
                index=index,
                stalls=stalls,
                tokens=tokens,
                sessions=sessions,
                streams=ConnectionLimiter(config.max_streams_per_principal),
                replays=PerPrincipal(config.replays_per_principal),
                lists=PerPrincipal(config.lists_per_principal),
                metrics=counts,
                prices=prices,
            )
            log.info("gateway stopping")
            # Teardown runs in reverse: token re-check, stall monitor, index, hub (closes every
            # client), publisher, layout check, clients.

    app = FastAPI(
        title="livestats gateway",
        version="1",
        summary="Live telemetry of LLM pipeline runs: WebSocket/SSE fan-out and the REST API.",
        lifespan=lifespan,
        # Served from the package by apidocs.py, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # Any 422 renders, even one echoing a non-finite number (finite.py).
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(session.router)
    app.include_router(api.router)
    app.include_router(ingest.router)
    app.include_router(estimation.router)
    app.include_router(analysis.router)
    app.include_router(sse.router)
    app.include_router(ws.router)
    app.include_router(pages.router)
    app.include_router(apidocs.router)
    pages.mount_assets(app)
    app.add_middleware(ws.StreamsFirst)
    if slot is not None and slot.private_port is not None:  # outermost: checked before any stream
        app.add_middleware(PrivatePort, port=slot.private_port)
    return app


async def _backfill(redis: Redis) -> None:
    """Runs recorded before per-principal indexes existed become visible in their owners' lists."""
    try:
        # Bounded: a gateway whose Redis is away still starts (and answers /readyz 503).
        async with asyncio.timeout(BACKFILL_TIMEOUT_S):
            indexed = await backfill_visibility(redis)
    except _BACKFILL_ERRORS as exc:  # the next start tries again; lists miss older runs meanwhile
        log.warning("per-principal run indexes not backfilled (%s: %s)", type(exc).__name__, exc)
        return
    if indexed:
        log.info("per-principal run indexes: %d earlier runs indexed", indexed)


def settings_tokens(config: GatewayConfig) -> list[TokenRecord]:
    """The admin token from settings (read once: a process cannot see its environment change;
    restart the gateway to change it). Token file records are TokenStore's: it re-reads the file
    when it changes, and a malformed file at start stops the start (fail fast)."""
    if config.admin_token is None:
        return []
    secret = config.admin_token.get_secret_value()
    return [TokenRecord(id=SETTINGS_TOKEN_ID, digest=digest(secret), principal="admin", scopes={Scope.ADMIN})]
