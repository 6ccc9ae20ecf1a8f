"""Running the gateway until told to stop.

uvicorn's `Server` does the phased shutdown when it runs in the main thread: on SIGINT or
SIGTERM it stops accepting, asks open connections to close, waits up to `shutdown_grace_s`
for them, cancels the rest, then runs the lifespan teardown (stall monitor, index, hub,
publisher, Redis). A second Ctrl-C skips the wait.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn
from livestats_shared.errors import LivestatsError

from .config import GatewayConfig
from .server import uvicorn_config

log = logging.getLogger("livestats.gateway")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the worker's format
# Not uvicorn's 3: `livestats gateway` execs this process, and to the CLI 3 means "no such run"
# while 1 means "a service failed" (like a crashed worker).
EXIT_STARTUP_FAILED = 1


class _Stopped(LivestatsError):
    """A stop signal arrived after (or before) uvicorn's own handling of it."""


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def run_until_signalled(config: GatewayConfig) -> None:
    """Serve until SIGINT/SIGTERM, then exit 0. Exits 1 if the gateway never started (port in
    use, the app's startup failed), so a supervisor sees the failure."""
    server = uvicorn.Server(uvicorn_config(config))
    _log_like_the_worker()
    # Once its shutdown is done, uvicorn re-raises the signal it caught under the handler that
    # was there before; by default SIGTERM would then end the process *by signal* (status 143)
    # and SIGINT print a KeyboardInterrupt traceback. The shutdown was clean: exit 0 instead.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    try:
        server.run()
    except _Stopped:
        log.info("gateway stopped")
        return
    except SystemExit:  # uvicorn's own exit (3) when it cannot bind or the app's startup fails
        if server.started:
            raise
    if not server.started:  # also reached if an older uvicorn returns on a failed startup
        log.error("gateway did not start on %s:%d (see above)", config.host, config.port)
        sys.exit(EXIT_STARTUP_FAILED)


def _log_like_the_worker() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # Building a uvicorn.Config installs uvicorn's own handlers and format; route its records
    # through the root handler so the gateway's log reads like every other livestats process.
    for name in ("uvicorn", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
