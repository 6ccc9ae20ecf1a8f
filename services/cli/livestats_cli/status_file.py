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
    # phase -> its state in the run as published (`running`, or a final state); seeded from the
    # run's snapshot when watch starts, so a restarted watch does not publish the same step again.
    states: dict[str, str] = field(default_factory=dict)

    def seed(self, phase_states: dict[str, str | None], now: float) -> None:
        """What the run already shows (its snapshot's phases), before the first read of the file."""
        for name, state in phase_states.items():
            if state is not None:
                self.states[name] = state
                self.indices.setdefault(name, len(self.indices))
                if state == "running":
                    self.started_at.setdefault(name, now)

    def events_for(self, status: PhaseStatus, now: float) -> list[PhaseStarted | PhaseFinished]:
        """The events `status` calls for: none when the run already shows it. A phase first seen
        finished is started first, so that the run declares it before it ends."""
        if status == self.last:
            return []
        known = self.states.get(status.phase)
        if status.state == "started":
            return [] if known == "running" else [self._started(status)]
        if known is not None and known != "running":
            return []  # already ended in the run: a restarted watch reads the same file again
        ended = self._finished(status, now)
        return [ended] if known == "running" else [self._started(status), ended]

    def event_for(self, status: PhaseStatus, now: float) -> PhaseStarted | PhaseFinished | None:
        """The last of `events_for` (what the status says now), or None."""
        events = self.events_for(status, now)
        return events[-1] if events else None

    def _index(self, status: PhaseStatus) -> int:
        return status.index if status.index is not None else self.indices.get(status.phase, len(self.indices))

    def _started(self, status: PhaseStatus) -> PhaseStarted:
        calls = status.calls if status.calls is not None else (status.succeeded or 0) + (status.failed or 0)
        return PhaseStarted(
            phase=status.phase, index=self._index(status), calls=calls, concurrency=status.concurrency or 1
        )

    def _finished(self, status: PhaseStatus, now: float) -> PhaseFinished:
        index = self._index(status)
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
            # The phase's final state: `failed` when the orchestrator says so, whatever the counts.
            state="failed" if failed_status else "finished",
        )

    def published(self, status: PhaseStatus, events: list[PhaseStarted | PhaseFinished], now: float) -> None:
        self.last = status
        for event in events:
            self.indices.setdefault(status.phase, event.index)
            if isinstance(event, PhaseStarted):
                self.started_at.setdefault(status.phase, now)
                self.states[status.phase] = "running"
            else:
                self.states[status.phase] = event.state
