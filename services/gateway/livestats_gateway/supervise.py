"""A gateway of several processes: start them, restart one that dies, stop them together.

Each process (`python -m livestats_gateway --process-index I ...`, serve.py) is a whole
gateway: its own shared reader (one read per stream per process), run index, connections and
stall-monitor candidate (the lease elects one among all processes of all gateways). They share
the public port with SO_REUSEPORT and each has a private port for metrics and readiness
(listen.py). The supervisor holds no socket and serves nothing.

    SIGTERM/SIGINT to the supervisor  -> SIGTERM to every process; each shuts down in phases as
                                         a lone gateway does; exit 0 once all exited 0
    a process dies                    -> restarted after a pause that doubles with each death
                                         in a row (RestartPolicy), logged
    too many deaths in a row, or a    -> the others are stopped, exit 1: whatever runs the
    process that never started (78)      supervisor (systemd, compose) sees the failure

SIGTERM rather than the signal received: a terminal's Ctrl-C has already reached the processes
(one process group), and to uvicorn a second SIGINT means "skip the grace period". Processes
get SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG, livestats_shared.process).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from livestats_shared.process import die_with_parent

from .config import GatewayConfig
from .listen import ProcessLayoutError, check_free, private_ports
from .serve import EXIT_PROCESS_NOT_STARTED, EXIT_STARTUP_FAILED, log_like_the_worker

log = logging.getLogger("livestats.gateway.supervisor")
STOP_MARGIN_S = 10.0  # beyond the processes' own shutdown grace, before they are killed


@dataclass(frozen=True)
class RestartPolicy:
    stable_s: float = 30.0  # a process that served this long had a good run: its count starts again
    max_deaths_in_a_row: int = 5  # give up at this many deaths, each within stable_s of its start
    first_pause_s: float = 0.5
    max_pause_s: float = 10.0


class Restarts:
    """One process slot's deaths in a row under a policy."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.in_a_row = 0

    def after_death(self, uptime_s: float) -> float | None:
        """The pause before starting the slot's process again, or None: give up."""
        if uptime_s >= self.policy.stable_s:
            self.in_a_row = 0
        self.in_a_row += 1
        if self.in_a_row >= self.policy.max_deaths_in_a_row:
            return None
        return float(min(self.policy.first_pause_s * 2 ** (self.in_a_row - 1), self.policy.max_pause_s))


def supervise(config: GatewayConfig, policy: RestartPolicy = RestartPolicy()) -> int:
    """Run `config.process_count()` gateway processes until a stop signal; the exit status."""
    log_like_the_worker()
    try:
        ports = private_ports(config)
        # Refused here, before any process starts: a port something already listens on (another
        # gateway's too, even one sharing its port: see check_free).
        check_free(config.host, [config.port, *(p for p in ports if p is not None)])
    except (ProcessLayoutError, OSError) as exc:
        log.error("%s", exc)
        log.error("gateway did not start on %s:%d (see above)", config.host, config.port)
        return EXIT_STARTUP_FAILED
    shown = "" if ports[0] is None else f", metrics and readiness of each on ports {ports[0]}-{ports[-1]}"
    log.info("%d processes on %s:%d%s", len(ports), config.host, config.port, shown)
    if ports[0] is None:
        log.warning(
            "no metrics port base: /metrics on the shared port answers for whichever process takes the "
            "connection; set --metrics-port-base (LIVESTATS_GATEWAY_METRICS_PORT_BASE) to scrape each"
        )
    return asyncio.run(Supervisor(config, len(ports), policy).run())


class Supervisor:
    def __init__(self, config: GatewayConfig, count: int, policy: RestartPolicy) -> None:
        self.config = config
        self.count = count
        self.policy = policy
        self.stopping = asyncio.Event()
        self.failed = False
        self.procs: dict[int, asyncio.subprocess.Process] = {}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        keepers = [asyncio.create_task(self._keep(index)) for index in range(self.count)]
        await self.stopping.wait()
        await asyncio.gather(*keepers)  # each returns at once once stopping is set
        clean = await self._stop_all()
        return EXIT_STARTUP_FAILED if self.failed or not clean else 0

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping %d processes", sig.name, self.count)
        self.stopping.set()

    def _argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "livestats_gateway", "--processes", str(self.count)]
        if self.config.metrics_port_base is not None:
            argv += ["--metrics-port-base", str(self.config.metrics_port_base)]
        return [*argv, "--process-index", str(index)]

    async def _keep(self, index: int) -> None:
        """Keep process `index` running until stopping; restart it when it dies."""
        restarts = Restarts(self.policy)
        while not self.stopping.is_set():
            try:
                # Spawned from the event loop's thread, the main one: PDEATHSIG is tied to the thread.
                proc = await asyncio.create_subprocess_exec(*self._argv(index), preexec_fn=die_with_parent())
            except OSError as exc:  # out of processes or memory: the same as a death at once
                pause = restarts.after_death(0.0)
                then = "stopping the gateway" if pause is None else f"trying again in {pause:.1f} s"
                log.error("process %d could not be spawned (%s): %s", index, exc, then)
                if pause is None:
                    self._fail()
                    return
                await self._unless_stopping(asyncio.sleep(pause))
                continue
            self.procs[index] = proc
            started = time.monotonic()
            log.info("process %d started (pid %d)", index, proc.pid)
            await self._unless_stopping(proc.wait())
            if self.stopping.is_set():
                return  # _stop_all ends it
            uptime, ended = time.monotonic() - started, _ended(proc.returncode)
            if proc.returncode == EXIT_PROCESS_NOT_STARTED:
                log.error("process %d could not start (%s; see its log above): stopping the gateway", index, ended)
                self._fail()
                return
            pause = restarts.after_death(uptime)
            if pause is None:
                log.error(
                    "process %d (pid %d) ended (%s) after %.1f s, its death number %d in a row: stopping the gateway",
                    index, proc.pid, ended, uptime, restarts.in_a_row,
                )  # fmt: skip
                self._fail()
                return
            log.warning(
                "process %d (pid %d) ended (%s) after %.1f s; starting it again in %.1f s",
                index, proc.pid, ended, uptime, pause,
            )  # fmt: skip
            await self._unless_stopping(asyncio.sleep(pause))

    async def _unless_stopping(self, work: Awaitable[object]) -> None:
        """Wait for `work` or for stopping, whichever comes first."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stop):
            pending.cancel()

    def _fail(self) -> None:
        self.failed = True
        self.stopping.set()

    async def _stop_all(self) -> bool:
        """SIGTERM to every live process, then wait; kill what outlives the grace. True if all
        exited 0."""
        live = [p for p in self.procs.values() if p.returncode is None]
        for proc in live:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                continue  # exited since the check
        bound = self.config.shutdown_grace_s + STOP_MARGIN_S
        try:
            async with asyncio.timeout(bound):
                await asyncio.gather(*(p.wait() for p in live))
        except TimeoutError:
            for proc in live:
                if proc.returncode is None:
                    log.error("process pid %d did not stop within %.0f s: killing it", proc.pid, bound)
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in live))
        # Killed by our SIGTERM: it came before the process had installed its handlers (it was
        # still starting), which is a clean stop too.
        clean = (0, None, -signal.SIGTERM)
        unclean = {i: p.returncode for i, p in self.procs.items() if p.returncode not in clean}
        for index, code in sorted(unclean.items()):
            log.warning("process %d ended with %s", index, _ended(code))
        if not unclean:
            log.info("all %d processes stopped", self.count)
        return not unclean


def _ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"
