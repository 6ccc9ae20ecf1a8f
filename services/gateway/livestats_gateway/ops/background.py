"""Background loops owned by a gateway component: started together, watched, stopped together.

A loop handles Redis errors itself, so one that ends on its own is a bug: it is logged as
critical at once (never swallowed) and `alive()` turns false, which /readyz reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self, log: logging.Logger, consequence: str) -> None:
        self._log = log
        self._consequence = consequence  # what stops working if a loop dies, for the log
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def alive(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)  # deaths were logged already
        self._tasks.clear()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.critical("%s died: %s", task.get_name(), self._consequence, exc_info=task.exception())


class Backoff:
    """Exponential delay between reconnect attempts, reset by a success."""

    def __init__(self, first_s: float = 0.05, most_s: float = 2.0) -> None:
        self.first_s, self.most_s = first_s, most_s
        self.delay_s = first_s

    @property
    def first_attempt(self) -> bool:
        return self.delay_s == self.first_s

    async def wait(self) -> None:
        await asyncio.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.most_s)

    def reset(self) -> None:
        self.delay_s = self.first_s
