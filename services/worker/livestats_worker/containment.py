"""For as long as a worker serves: subreaper on, orphans reaped, and a reaper process that
kills the worker's calls if the worker itself is killed (docs/processes.md, "Worker SIGKILL").

Entering sweeps what workers that died on this host left behind; leaving kills whatever still
carries this worker's markers, then lets the reaper process go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar

from . import children, procscan

log = logging.getLogger("livestats.worker")
JANITOR_INTERVAL_S = 2.0  # seconds between passes that reap orphans which ended on their own
_REAPER_EXIT_S = 15.0  # how long leaving waits for the reaper process to finish its last sweep


def owned_by_dead_worker(value: bytes) -> bool:
    """Whether a marker's worker (`<pid namespace>.<pid>.<start ticks>`) is in our PID namespace
    and no longer running. Markers of other namespaces (containers seen from the host) name pids
    we cannot check: they are left alone."""
    namespace, _, rest = value.split(b"/", 1)[0].decode(errors="replace").partition(".")
    pid_text, _, ticks = rest.partition(".")
    if namespace != procscan.pid_namespace() or not pid_text.isdigit():
        return False  # another namespace's, or not a marker this code wrote
    info = procscan.stat(int(pid_text))
    return info is None or str(info.start_ticks) != ticks


def owned_by(tag: str) -> Callable[[bytes], bool]:
    """Whether a marker was written by the worker `tag` names."""
    prefix = f"{tag}/".encode()
    return lambda value: value.startswith(prefix)


def owned_by_run(run_id: str) -> Callable[[bytes], bool]:
    """Whether a marker belongs to a call of `run_id` on this worker process: for killing a
    whole run's processes at once (`children.kill_marked(owned_by_run(run_id))`, in a thread)."""
    return owned_by(f"{children.worker_tag()}/{run_id}")


class Containment:
    """Async context manager around a worker's serving life; Linux features degrade to the
    marker sweep elsewhere.

    One per process: the subreaper flag, the markers' worker tag and the reaper process are
    process-wide, so workers sharing a process (tests, an embedding program) share one
    containment, set up by the first to enter and torn down by the last to leave.
    """

    _users: ClassVar[int] = 0
    _active: ClassVar[Containment | None] = None

    def __init__(self) -> None:
        self._was_subreaper: bool | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._reaper_pipe: int | None = None
        self._janitor: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Containment:
        if Containment._users == 0:
            await self._start()
            Containment._active = self
        Containment._users += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        Containment._users -= 1
        if Containment._users == 0 and Containment._active is not None:
            active, Containment._active = Containment._active, None
            await active._stop()

    async def _start(self) -> None:
        self._was_subreaper = children.subreaper()
        children.subreaper(True)
        left = await asyncio.to_thread(children.kill_marked, owned_by_dead_worker)
        if left.killed:
            log.warning("killed %d processes left running by workers that died: %s", len(left.killed), left.killed)
        self._start_reaper()
        self._janitor = asyncio.create_task(self._reap_orphans(), name="orphan-reaper")

    async def _stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)
        left = await asyncio.to_thread(children.kill_marked, owned_by(children.worker_tag()))
        if left.killed:
            log.warning("killed %d processes of finished calls at shutdown: %s", len(left.killed), left.killed)
        await asyncio.to_thread(self._stop_reaper)
        if self._was_subreaper is not None:
            children.subreaper(self._was_subreaper)

    def _start_reaper(self) -> None:
        read_end, write_end = os.pipe()  # not inheritable (PEP 446): FPF never holds it open
        try:
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "livestats_worker.reaper", children.worker_tag()],
                stdin=read_end,
                # Its own session: a terminal's Ctrl-C or a group kill aimed at the worker must not
                # take it down before it has done its one job.
                start_new_session=True,
            )
        except OSError as exc:
            os.close(write_end)
            log.error("cannot start the reaper process (%s): a SIGKILLed worker would leave its calls running", exc)
            return
        finally:
            os.close(read_end)
        children.SPAWNED.add(self._reaper.pid)
        self._reaper_pipe = write_end

    def _stop_reaper(self) -> None:
        if self._reaper_pipe is not None:
            os.close(self._reaper_pipe)  # EOF: the reaper sweeps (nothing is left) and exits
            self._reaper_pipe = None
        if self._reaper is None:
            return
        try:
            self._reaper.wait(_REAPER_EXIT_S)
        except subprocess.TimeoutExpired:
            log.error("the reaper process %d has not exited; killing it", self._reaper.pid)
            self._reaper.kill()
            self._reaper.wait()
        children.SPAWNED.discard(self._reaper.pid)

    async def _reap_orphans(self) -> None:
        orphans = children.OrphanReaper()
        while True:
            await asyncio.sleep(JANITOR_INTERVAL_S)
            reaped = orphans.pass_once()
            if reaped:
                log.info("reaped %d orphaned processes: %s", len(reaped), reaped)

    @classmethod
    def reaper_pid(cls) -> int | None:
        """The reaper process of this process's containment, if one is running."""
        active = cls._active
        return None if active is None or active._reaper is None else active._reaper.pid
