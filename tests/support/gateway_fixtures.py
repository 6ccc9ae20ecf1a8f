"""A real gateway: uvicorn in a thread of its own (own event loop) on a free port, and API tokens.

Its fixtures (start_gateway, gateway, make_token) reach every test directory through
tests/conftest.py; GatewayHandle and bearer are imported by name where a test needs them.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
import websockets.sync.client as ws_sync
from livestats_cli.embedded import free_port
from livestats_gateway.config import GatewayConfig
from livestats_gateway.server import uvicorn_config
from livestats_shared.auth import Scope, TokenStore
from websockets.exceptions import ConnectionClosed


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class GatewayHandle:
    """One gateway process-alike. `stop()` and `start()` restart it on the same port.
    `headers` authenticate as the gateway's fixed admin token (principal `admin`)."""

    def __init__(self, config: GatewayConfig, log_level: str = "warning") -> None:
        self.config = config
        self.log_level = log_level
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        assert self.config.admin_token is not None
        return self.config.admin_token.get_secret_value()

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    def client(self, token: str | None = None, **kwargs: object) -> httpx.AsyncClient:
        """An HTTP client on this gateway, authenticated as `token` (default: admin)."""
        token = self.token if token is None else token
        return httpx.AsyncClient(base_url=self.http, headers=bearer(token), timeout=10, **kwargs)  # type: ignore[arg-type]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}"

    def start(self) -> GatewayHandle:
        self.server = uvicorn.Server(uvicorn_config(self.config, log_level=self.log_level))
        self.thread = threading.Thread(target=self.server.run, name=f"gateway-{self.config.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        # FastAPI (routes) and pydantic (schemas) build some things on first use, and not
        # thread-safely; in-thread gateways share one process, so each is warmed here, one after
        # the other: a request, an authenticated one and a socket.
        # The answers do not matter (a test may start a gateway whose Redis is unreachable).
        httpx.get(f"{self.http}/healthz", timeout=10).raise_for_status()
        httpx.get(f"{self.http}/api/runs", headers=self.headers, timeout=10)
        socket = ws_sync.connect(f"{self.ws}/ws/runs", additional_headers=self.headers, open_timeout=10)
        # Closed with 1013 when Redis is unreachable: warmed all the same.
        with socket as ws, contextlib.suppress(ConnectionClosed):
            ws.recv(timeout=10)
        return self

    def stop(self) -> None:
        if self.server is None or self.thread is None:
            return
        self.server.should_exit = True
        self.thread.join(timeout=20)
        if self.thread.is_alive():
            raise RuntimeError("gateway did not stop within 20 s")
        self.server = None
        self.thread = None

    @property
    def app_state(self) -> dict:
        """The lifespan state of the running app (for white-box checks such as queue sizes)."""
        assert self.server is not None
        return self.server.lifespan.state


@pytest.fixture
def start_gateway(redis_url: str, queue_name: str) -> Iterator[object]:
    """Start gateways with settings overrides; all are stopped at teardown."""
    started: list[GatewayHandle] = []

    def start(log_level: str = "warning", **overrides: object) -> GatewayHandle:
        settings: dict[str, object] = {
            "redis_url": redis_url,
            "queue_name": queue_name,
            "heartbeat_s": 0.5,
            "stall_check_interval_s": 0.2,
            "admin_token": secrets.token_urlsafe(32),
            "max_streams_per_principal": 10_000,  # load tests open many sockets as one admin
            "replays_per_principal": 10_000,  # ... and replay them all at once (fairness has its own tests)
            **overrides,
        }
        config = GatewayConfig(port=free_port(), **settings)  # type: ignore[arg-type]
        handle = GatewayHandle(config, log_level).start()
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def gateway(start_gateway) -> GatewayHandle:
    return start_gateway()


@pytest.fixture
async def make_token(redis) -> AsyncIterator[object]:
    """Create API tokens in Redis: `await make_token("alice", "submit", teams=["ml"])` returns
    the token. All are revoked at teardown."""
    store = TokenStore(redis)
    made: list[str] = []

    async def make(principal: str, *scopes: str, teams: tuple[str, ...] | list[str] = ()) -> str:
        record, token = await store.create(principal, [Scope(s) for s in scopes or ("read",)], teams)
        made.append(record.id)
        return token

    yield make
    for token_id in made:
        await store.revoke(token_id)
