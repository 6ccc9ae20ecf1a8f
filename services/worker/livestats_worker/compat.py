"""Every use of arq's internals by the worker, fenced in one place.

Policy as in `livestats_shared.compat` (docs/compat.md): `RELIED_ON` records a digest of each
internal as it is in the pinned arq (==0.28.0, checked at import by the shared module), and
tests/compat/ fails when an upgrade changes one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from arq.worker import Worker
from livestats_shared import compat as _shared_compat  # refuses arq/redis outside the pins

PINNED_ARQ = _shared_compat.ARQ_VERIFIED

RELIED_ON = {
    # `HookedWorker.poll_once` wraps it: main() calls it once per poll; it starts jobs only while
    # `allow_pick_jobs`, cancels aborted ones and drops finished tasks from `tasks`.
    "arq.worker.Worker._poll_iteration": "f8d39d823a0a59f2",
    "arq.worker.Worker.main": "45ca1591c9717466",
    # close() gathers `tasks` without return_exceptions: `close_after_jobs_ended` empties it first.
    "arq.worker.Worker.close": "5bcc9cb356680829",
}


class HookedWorker(Worker):
    """arq's Worker with what livestats needs of its internals behind named methods."""

    async def _poll_iteration(self) -> None:
        await self.poll_once(super()._poll_iteration)

    async def poll_once(self, poll: Callable[[], Awaitable[None]]) -> None:
        """One iteration of arq's poll loop (`poll`); subclasses wrap it."""
        await poll()

    def jobs_in_flight(self) -> list[asyncio.Task[Any]]:
        """The tasks of the jobs this worker started and arq has not yet forgotten."""
        return list(self.tasks.values())

    def stop_picking_jobs(self) -> None:
        """Running jobs go on; no new job starts (arq's own signal handler does the same)."""
        self.allow_pick_jobs = False

    async def close_after_jobs_ended(self) -> None:
        """arq's close(), for a caller that has already awaited every job task: close() gathers
        them without return_exceptions, so a job that ended with an error would raise out of it."""
        self.tasks.clear()
        await self.close()
