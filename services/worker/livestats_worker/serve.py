"""Running a worker until told to stop, then shutting down in phases:
stop taking jobs, let running runs finish within a bound, cancel the rest (their process
groups are killed and they end `cancelled` / `worker_shutdown`), then close connections.
Before anything, the telemetry database's key layout is checked (layout.py): a worker that
would write keys nobody reads does not start."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from livestats_shared import layout
from livestats_shared.redis_client import connect

from .app import ResilientWorker, WorkerStopping, create_worker
from .config import WorkerConfig
from .containment import Containment
from .metrics import MetricsServer, WorkerMetrics

log = logging.getLogger("livestats.worker")
_POLL_STOP_S = 5.0  # how long arq's poll loop may take to notice it should stop
_LAYOUT_ATTEMPTS = 6  # as arq's pool (arq_pool.py): the server may be starting beside us


async def serve(config: WorkerConfig, stop: asyncio.Event) -> None:
    """Raises layout.LayoutError, before starting anything, if the database is not usable."""
    telemetry = connect(config.redis_url, "livestats.worker")
    try:
        await layout.ensure_when_reachable(telemetry, attempts=_LAYOUT_ATTEMPTS)
    finally:
        await telemetry.aclose()
    metrics = WorkerMetrics.for_config(config)
    # Containment outlives the runs: its exit sweeps what they left and lets the reaper go.
    async with Containment():
        with MetricsServer(metrics.registry, config.metrics_host, config.metrics_port):
            await _serve(config, stop, metrics)


async def _serve(config: WorkerConfig, stop: asyncio.Event, metrics: WorkerMetrics) -> None:
    worker = create_worker(config, handle_signals=False, metrics=metrics)
    main = asyncio.create_task(worker.main(), name="arq-main")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    crashed = main.done() and not main.cancelled() and main.exception() is not None
    if crashed:
        log.error("arq's poll loop ended on its own; shutting down", exc_info=main.exception())
    await _shutdown(worker, main, config.shutdown_grace_s)
    if crashed:
        await main  # re-raise: the process must exit non-zero so a supervisor restarts it


async def _shutdown(worker: ResilientWorker, main: asyncio.Task[None], grace_s: float) -> None:
    worker.stop_picking_jobs()
    running = [t for t in worker.jobs_in_flight() if not t.done()]
    if running:
        log.info("stopping: waiting up to %.0f s for %d running runs", grace_s, len(running))
        _, still = await asyncio.wait(running, timeout=grace_s) if grace_s > 0 else (set(), set(running))
        for task in still:
            task.cancel()
    worker.stop_polling()
    _, polling = await asyncio.wait({main}, timeout=_POLL_STOP_S)
    if polling:  # stuck in a command (e.g. Redis is away): cancel after all
        main.cancel()
    for result in await asyncio.gather(main, *worker.jobs_in_flight(), return_exceptions=True):
        if isinstance(result, Exception) and not isinstance(result, WorkerStopping):
            log.error("worker task ended with an error during shutdown", exc_info=result)
    await worker.close_after_jobs_ended()
    log.info("worker stopped")


def run_until_signalled(config: WorkerConfig) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    try:
        asyncio.run(main())
    except layout.LayoutError as exc:
        log.error("worker not started: %s", exc)
        sys.exit(1)
