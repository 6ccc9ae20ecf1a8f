"""Running one gateway process until told to stop.

uvicorn's `Server` does the phased shutdown when it runs in the main thread: on SIGINT or
SIGTERM it stops accepting, asks open connections to close, waits up to `shutdown_grace_s`
for them, cancels the rest, then runs the lifespan teardown (stall monitor, index, hub,
publisher, Redis). A second Ctrl-C skips the wait.

A lone gateway (`--processes 1`) is this process; a gateway of several processes is a
supervisor (supervise.py) whose children each run `serve_as_process`.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from livestats_shared.errors import LivestatsError

from .config import GatewayConfig
from .listen import ProcessLayoutError, Slot, private_ports, slot_sockets
from .server import uvicorn_config

log = logging.getLogger("livestats.gateway")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the worker's format
# Not uvicorn's 3: `livestats gateway` execs this process, and to the CLI 3 means "no such run"
# while 1 means "a service failed" (like a crashed worker).
EXIT_STARTUP_FAILED = 1
# A supervised process that never served exits with this (EX_CONFIG of sysexits.h) rather than
# 1, which an uncaught exception also gives: what stops a start (the configuration, a taken
# port) is not fixed by starting again, so the supervisor stops instead of restarting it.
EXIT_PROCESS_NOT_STARTED = 78


class _Stopped(LivestatsError):
    """A stop signal arrived after (or before) uvicorn's own handling of it."""


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def run_until_signalled(config: GatewayConfig) -> None:
    """A lone gateway process: serve until SIGINT/SIGTERM, then exit 0. Exits 1 if the gateway
    never started (port in use, the app's startup failed), so a supervisor sees the failure.
    With `metrics_port_base` it also answers health and metrics there, as process 0."""
    try:
        (private,) = private_ports(config.model_copy(update={"processes": 1}))
    except ProcessLayoutError as exc:
        log_like_the_worker()
        log.error("%s", exc)
        sys.exit(EXIT_STARTUP_FAILED)
    slot = None if private is None else Slot(0, private, reuse_port=False)
    _serve(config, slot, EXIT_STARTUP_FAILED, LOG_FORMAT)


def serve_as_process(config: GatewayConfig, index: int) -> None:
    """Process `index` of a supervised gateway: the public port shared with its siblings, its
    own private port; exit 78 if it never started."""
    slot = Slot(index, private_ports(config)[index], reuse_port=True)
    # Lines of sibling processes interleave in one log: each says whose it is.
    _serve(config, slot, EXIT_PROCESS_NOT_STARTED, f"%(asctime)s %(levelname)s %(name)s[{index}]: %(message)s")


def _serve(config: GatewayConfig, slot: Slot | None, not_started: int, log_format: str) -> None:
    server = uvicorn.Server(uvicorn_config(config, slot=slot))
    log_like_the_worker(log_format)
    sockets: list[socket.socket] | None = None
    if slot is not None:  # otherwise uvicorn binds (and reports a taken port) itself
        try:
            sockets = slot_sockets(config, slot)
        except OSError as exc:
            log.error("%s", exc)
            log.error("gateway did not start on %s:%d (see above)", config.host, config.port)
            sys.exit(not_started)
        log.info("listening on %s", ", ".join(_address(s) for s in sockets))
    # Once its shutdown is done, uvicorn re-raises the signal it caught under the handler that
    # was there before; by default SIGTERM would then end the process *by signal* (status 143)
    # and SIGINT print a KeyboardInterrupt traceback. The shutdown was clean: exit 0 instead.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    try:
        server.run(sockets=sockets)
    except _Stopped:
        log.info("gateway stopped")
        return
    except SystemExit:  # uvicorn's own exit (3) when it cannot bind or the app's startup fails
        if server.started:
            raise
    if not server.started:  # also reached if an older uvicorn returns on a failed startup
        log.error("gateway did not start on %s:%d (see above)", config.host, config.port)
        sys.exit(not_started)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def log_like_the_worker(log_format: str = LOG_FORMAT) -> None:
    logging.basicConfig(level=logging.INFO, format=log_format)
    # Building a uvicorn.Config installs uvicorn's own handlers and format; route its records
    # through the root handler so the gateway's log reads like every other livestats process.
    for name in ("uvicorn", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
