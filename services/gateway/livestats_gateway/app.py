"""The gateway application: `create_app(config)` wires Redis, the hub and the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from livestats_shared.auth import Scope, TokenRecord, TokenStore, digest, load_token_file
from livestats_shared.pricing import load_price_table
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect, redact_url

from . import analysis, api, estimation, ingest, metrics, pages, session, sse, ws
from .config import GatewayConfig
from .hub import Hub
from .index import RunIndex
from .limits import ConnectionLimiter
from .metrics import GatewayMetrics
from .recheck import TokenRecheck
from .stalls import StallMonitor
from .state import State

log = logging.getLogger("livestats.gateway")


def create_app(config: GatewayConfig) -> FastAPI:
    prices = load_price_table(config.prices_file, config.prices)  # a bad table stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            redis = connect(config.redis_url, "livestats.gateway", busy_loop=True)
            stack.push_async_callback(redis.aclose)
            publisher = await stack.enter_async_context(Publisher(redis, producer=None))
            counts = GatewayMetrics()
            hub = await stack.enter_async_context(Hub(config, redis, counts))
            index = await stack.enter_async_context(RunIndex(config, redis, hub))
            stalls = await stack.enter_async_context(StallMonitor(config, redis, publisher))
            counts.watch(hub, stalls)
            tokens = TokenStore(redis, fixed_tokens(config))
            await stack.enter_async_context(TokenRecheck(config.auth_recheck_s, tokens, hub))
            log.info("gateway ready (redis %s)", redact_url(config.redis_url))
            yield State(
                config=config,
                redis=redis,
                publisher=publisher,
                hub=hub,
                index=index,
                stalls=stalls,
                tokens=tokens,
                streams=ConnectionLimiter(config.max_streams_per_principal),
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
    )
    app.include_router(session.router)
    app.include_router(api.router)
    app.include_router(ingest.router)
    app.include_router(estimation.router)
    app.include_router(analysis.router)
    app.include_router(sse.router)
    app.include_router(ws.router)
    app.include_router(metrics.router)
    app.include_router(pages.router)
    pages.mount_assets(app)
    return app


def fixed_tokens(config: GatewayConfig) -> list[TokenRecord]:
    """Tokens from settings and the tokens file; a malformed file stops the start (fail fast)."""
    records = load_token_file(config.tokens_file) if config.tokens_file is not None else []
    if config.admin_token is not None:
        secret = config.admin_token.get_secret_value()
        records.append(TokenRecord(id="settings", digest=digest(secret), principal="admin", scopes={Scope.ADMIN}))
    return records
