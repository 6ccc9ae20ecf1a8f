"""The sockets a gateway process listens on, bound before uvicorn runs.

Under the supervisor (supervise.py) every process binds the public port itself with
SO_REUSEPORT: the kernel spreads new connections over the processes' sockets by a hash of each
connection's addresses, with no process in the middle and no accept lock. Each process also
binds a private port of its own (`metrics_port_base + index`), so Prometheus can scrape every
process and a health check can ask each one.

Sockets are bound here but not listened on: asyncio's `create_server` listens once the app's
startup is complete, so the kernel hands a (re)starting process no connection before it can
serve one, while a port already taken still fails the start at once.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from livestats_shared.errors import LivestatsError

from .config import GatewayConfig


class ProcessLayoutError(LivestatsError, ValueError):
    """A process count and port layout that cannot work (said in the message)."""


@dataclass(frozen=True)
class Slot:
    """One gateway process's place: its index (the `process` label on its metrics), its
    private port (None: none), and whether it shares the public port with siblings."""

    index: int
    private_port: int | None
    reuse_port: bool


def private_ports(config: GatewayConfig) -> list[int | None]:
    """Each process's private port, in index order (all None without `metrics_port_base`).
    Raises ProcessLayoutError for a layout that cannot bind."""
    count = config.process_count()
    if count > 1 and config.port == 0:
        raise ProcessLayoutError(f"{count} processes need a fixed port to share (the port is 0: any free port)")
    base = config.metrics_port_base
    if base is None:
        return [None] * count
    ports = list(range(base, base + count))
    if ports[-1] > 65535:
        raise ProcessLayoutError(f"metrics port base {base} with {count} processes runs past port 65535")
    if config.port in ports:
        raise ProcessLayoutError(
            f"metrics ports {ports[0]}-{ports[-1]} ({count} processes from base {base}) include the "
            f"gateway's own port {config.port}"
        )
    return list(ports)


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening. Raises OSError (e.g. EADDRINUSE)
    whose message names the address, as asyncio's does."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio's create_server does: a restart need not wait out old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise OSError(exc.errno, f"error while attempting to bind on {host}:{port}: {reason}") from exc
    return sock


def slot_sockets(config: GatewayConfig, slot: Slot) -> list[socket.socket]:
    """The public socket and, if the slot has one, its private one. Raises OSError."""
    public = bind(config.host, config.port, reuse_port=slot.reuse_port)
    if slot.private_port is None:
        return [public]
    try:
        return [public, bind(config.host, slot.private_port, reuse_port=False)]
    except OSError:
        public.close()
        raise


def check_free(host: str, ports: list[int]) -> None:
    """Raise OSError naming the first port something already listens on. Bound without
    SO_REUSEPORT: that bind fails even against sockets that share their port, so a second
    supervisor on the same port is refused instead of silently taking half the connections."""
    for port in ports:
        bind(host, port, reuse_port=False).close()
