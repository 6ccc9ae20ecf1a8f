"""A process's private port (listen.py) answers health and metrics only.

Every process of a gateway shares the public port, so a request there reaches whichever process
the kernel picked; the private port reaches one known process, for Prometheus and health checks.
Anything else asked on it is refused: the API and the streams stay behind the public port and
whatever proxy guards it.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PRIVATE_PATHS = frozenset({"/metrics", "/readyz", "/healthz"})
# Sent before accepting: the client sees its handshake refused with HTTP 403.
WS_POLICY_VIOLATION = 1008


class PrivatePort:
    """ASGI middleware: on `port` (the local port a connection came in on), only PRIVATE_PATHS."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = scope["type"] in ("http", "websocket") and scope["path"] not in PRIVATE_PATHS
        if not refused or _local_port(scope) != self.port:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": ""})
        else:
            await PlainTextResponse("only /metrics, /readyz and /healthz on this port", 404)(scope, receive, send)


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server is not None and len(server) > 1 and server[1] is not None else None
