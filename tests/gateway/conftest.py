"""A real gateway: uvicorn in a thread of its own (own event loop) on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from livestats_cli.embedded import free_port
from livestats_gateway.config import GatewayConfig
from livestats_gateway.server import uvicorn_config


class GatewayHandle:
    """One gateway process-alike. `stop()` and `start()` restart it on the same port."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}"

    def start(self) -> GatewayHandle:
        self.server = uvicorn.Server(uvicorn_config(self.config, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"gateway-{self.config.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
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
        return self.server.lifespan.state  # type: ignore[attr-defined]


@pytest.fixture
def start_gateway(redis_url: str, queue_name: str) -> Iterator[object]:
    """Start gateways with settings overrides; all are stopped at teardown."""
    started: list[GatewayHandle] = []

    def start(**overrides: object) -> GatewayHandle:
        settings: dict[str, object] = {"heartbeat_s": 0.5, "stall_check_interval_s": 0.2, **overrides}
        config = GatewayConfig(
            redis_url=redis_url,
            queue_name=queue_name,
            port=free_port(),
            **settings,  # type: ignore[arg-type]
        )
        handle = GatewayHandle(config).start()
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def gateway(start_gateway) -> GatewayHandle:
    return start_gateway()
