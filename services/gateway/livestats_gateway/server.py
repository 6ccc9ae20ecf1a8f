"""uvicorn settings for the gateway, shared by `livestats gateway` and the tests."""

from __future__ import annotations

import math

import uvicorn

from .access.connguard import ConnectionGuard
from .app import create_app
from .config import GatewayConfig
from .fanout.direct import DirectProtocol
from .listen import Slot
from .ops.logs import install_redaction


def uvicorn_config(config: GatewayConfig, *, log_level: str = "info", slot: Slot | None = None) -> uvicorn.Config:
    guard = ConnectionGuard(config.header_timeout_s, config.body_timeout_s, config.connection_cap())
    settings = uvicorn.Config(
        create_app(config, slot),
        host=config.host,
        port=config.port,
        log_level=log_level,
        # httptools with header/body timeouts and a connection cap (connguard.py).
        http=guard.protocol_class(),
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]  # used as a float
        # No `limit_concurrency`: at its limit uvicorn answers 503 to every request, /healthz and
        # authenticated users included; the guard's cap closes idle connections instead.
        # Protocol pings find dead peers; the application heartbeat tells clients the time.
        ws_ping_interval=config.ws_ping_interval_s,
        ws_ping_timeout=config.ws_ping_timeout_s,
        # Clients send only small control messages; a larger frame is refused by the
        # protocol layer (1009) before it is buffered.
        ws_max_size=max(config.client_message_max_bytes, 1024) * 4,
        # uvicorn's "websockets-sansio" (of its implementations the one that holds an idle
        # connection in the least memory and passes the tests: wsproto hides the
        # Sec-WebSocket-Protocol header browsers send their token in; commit 97d824e), with a
        # direct path for the streaming endpoints' frames (fanout/direct.py).
        ws=DirectProtocol,
        ws_per_message_deflate=config.ws_compression,
        timeout_graceful_shutdown=math.ceil(config.shutdown_grace_s),
        proxy_headers=True,
        server_header=False,
    )
    install_redaction()  # after uvicorn.Config, which configures logging
    return settings
