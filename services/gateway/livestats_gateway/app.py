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
from livestats_shared.redis_client import UNAVAILABLE, connect, redact_url
from livestats_shared.sessions import SessionStore
from livestats_shared.visibility import backfill_visibility
from redis.asyncio import Redis

from .access.fairness import PerPrincipal
from .access.limits import ConnectionLimiter
from .access.recheck import TokenRecheck
from .config import GatewayConfig
from .fanout.hub import Hub
from .fanout.index import RunIndex
from .ops.metrics import GatewayMetrics
from .ops.stalls import StallMonitor
from .routes import analysis, api, apidocs, estimation, ingest, pages, session, sse, ws
from .routes.finite import validation_error
from .state import State

log = logging.getLogger("livestats.gateway")
BACKFILL_TIMEOUT_S = 10.0
_BACKFILL_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, TimeoutError)


def create_app(config: GatewayConfig) -> FastAPI:
    prices = load_price_table(config.prices_file, config.prices)  # a bad table stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            redis = connect(config.redis_url, "livestats.gateway", busy_loop=True)
            stack.push_async_callback(redis.aclose)
            await _backfill(redis)
            publisher = await stack.enter_async_context(Publisher(redis, producer=None))
            counts = GatewayMetrics()
            hub = await stack.enter_async_context(Hub(config, redis, counts.fanout))
            index = await stack.enter_async_context(RunIndex(config, redis, hub))
            stalls = await stack.enter_async_context(StallMonitor(config, redis, publisher))
            counts.watch(hub, stalls)
            tokens = TokenStore(redis, settings_tokens(config), config.tokens_file)
            sessions = SessionStore(redis, tokens, idle_s=config.session_idle_s, max_s=config.session_max_s)
            await stack.enter_async_context(TokenRecheck(config.auth_recheck_s, tokens, sessions, hub))
            log.info("gateway ready (redis %s)", redact_url(config.redis_url))
            yield State(
                config=config,
                redis=redis,
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
            # client), publisher.

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
