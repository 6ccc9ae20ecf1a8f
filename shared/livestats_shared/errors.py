"""Exceptions raised by the livestats contract package.

LivestatsError
├── InvalidRunId          a run id that does not match the strict pattern (never reaches Redis)
├── InvalidEvent          an event or stream entry that does not match the contract
├── PublishError          an event could not be written to Redis
│   └── OutboxFull        fire-and-forget buffer is at capacity; the event was refused
└── RunStateConflict      a guarded transition lost a race (e.g. cancel vs. start)
"""

from __future__ import annotations


class LivestatsError(Exception):
    """Base class for every error this package raises on purpose."""


class InvalidRunId(LivestatsError, ValueError):
    def __init__(self, run_id: object) -> None:
        shown = repr(run_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"invalid run id {shown}: expected 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
        )


class InvalidEvent(LivestatsError, ValueError):
    pass


class PublishError(LivestatsError):
    pass


class OutboxFull(PublishError):
    pass


class RunStateConflict(LivestatsError):
    def __init__(self, run_id: str, status: str | None) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id} is {status or 'unknown'}; transition refused")
