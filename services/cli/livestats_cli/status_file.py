"""An orchestrator's status file (like `current-phase.json`) as phase events.

The file is one JSON object; only `phase` and `status` are required:
    {"phase": "generate", "status": "running", "index": 0, "calls": 40, "concurrency": 4}
    {"phase": "generate", "status": "done", "succeeded": 39, "failed": 1, "duration_s": 81.5}
An active status (started, running, in_progress, active) gives `phase.started`; a terminal one
(done, completed, succeeded, finished, failed, error) gives `phase.finished`. Other keys (an
`updated_at` the orchestrator bumps on every write, say) are ignored: a write that changes
none of the fields above is not a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from livestats_shared.errors import LivestatsError
from livestats_shared.events import PhaseFinished, PhaseStarted
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

ACTIVE = frozenset({"started", "running", "in_progress", "active"})
SUCCEEDED = frozenset({"done", "completed", "complete", "succeeded", "success", "finished"})
FAILED = frozenset({"failed", "error"})


class StatusFileError(LivestatsError, ValueError):
    """The file is not a status this command understands (reported, and watching goes on)."""


class PhaseStatus(BaseModel):
    """The fields of a status file that make its event; equal statuses publish nothing."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    phase: str = Field(min_length=1, max_length=200, validation_alias=AliasChoices("phase", "current_phase"))
    status: str = Field(min_length=1)
    index: int | None = Field(None, ge=0)
    calls: int | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1)
    succeeded: int | None = Field(None, ge=0)
    failed: int | None = Field(None, ge=0)
    duration_s: float | None = Field(None, ge=0)

    @property
    def state(self) -> str:
        status = self.status.strip().lower()
        if status in ACTIVE:
            return "started"
        if status in SUCCEEDED or status in FAILED:
            return "finished"
        known = sorted(ACTIVE | SUCCEEDED | FAILED)
        raise StatusFileError(f"unknown status {self.status!r}; expected one of {', '.join(known)}")


def parse_status(text: str) -> PhaseStatus:
    if not text.strip():
        raise StatusFileError("the file is empty")
    try:
        status = PhaseStatus.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise StatusFileError(problems) from exc
    status.state  # noqa: B018 -- an unknown status is a malformed file, found here rather than later
    return status


@dataclass
class PhaseTracker:
    """What has been published, so only real changes become events."""

    last: PhaseStatus | None = None
    indices: dict[str, int] = field(default_factory=dict)  # phase -> index, in order of appearance
    started_at: dict[str, float] = field(default_factory=dict)  # phase -> monotonic time seen started

    def event_for(self, status: PhaseStatus, now: float) -> PhaseStarted | PhaseFinished | None:
        """The event `status` calls for, or None when it is what was last published."""
        if status == self.last:
            return None
        index = status.index if status.index is not None else self.indices.get(status.phase, len(self.indices))
        if status.state == "started":
            return PhaseStarted(
                phase=status.phase, index=index, calls=status.calls or 0, concurrency=status.concurrency or 1
            )
        failed_status = status.status.strip().lower() in FAILED
        since = self.started_at.get(status.phase)
        duration = status.duration_s if status.duration_s is not None else (now - since if since is not None else 0.0)
        return PhaseFinished(
            phase=status.phase,
            index=index,
            succeeded=status.succeeded if status.succeeded is not None else 0,
            # A phase reported failed with no counts still shows as a failure.
            given_up=status.failed if status.failed is not None else int(failed_status),
            duration_s=round(duration, 3),
        )

    def published(self, status: PhaseStatus, event: PhaseStarted | PhaseFinished, now: float) -> None:
        self.last = status
        self.indices.setdefault(status.phase, event.index)
        if isinstance(event, PhaseStarted):
            self.started_at.setdefault(status.phase, now)
