"""Bodies the REST API answers with, declared so the OpenAPI document says what is sent."""

from __future__ import annotations

from typing import Literal

from livestats_shared.events import Event
from livestats_shared.stats import RunSnapshot
from pydantic import BaseModel, ConfigDict, Field

# A run's `status` in its stats hash: `queued`, `running`, then its outcome.
RunStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "stalled"]


class ErrorBody(BaseModel):
    detail: str


class RunLinks(BaseModel):
    """Paths (not URLs) of everything there is to do with a run."""

    model_config = ConfigDict(populate_by_name=True)
    self_: str = Field(alias="self", description="The run's snapshot.")
    events: str = Field(description="The run's history, paged.")
    stream: str = Field(description="Server-sent events: history, then live.")
    ws: str = Field(description="WebSocket: history, then live.")
    cancel: str = Field(description="POST here to cancel the run.")


class Submitted(BaseModel):
    run_id: str
    status: Literal["queued"]
    links: RunLinks


class RunPage(BaseModel):
    runs: list[RunSnapshot] = Field(description="Newest first.")
    next: str | None = Field(description="Pass as `cursor` for the next page; null when no runs follow.")


class EventPage(BaseModel):
    events: list[Event] = Field(description="Oldest first, each with its stream `id`.")
    next: str | None = Field(description="Pass as `after` for the next page; null when no events follow yet.")
    skipped: int = Field(description="Stream entries in this page that are not livestats events, left out.")
    after: str | None = Field(description="The position asked for (`after`); null: from the start of the run.")
    first_id: str | None = Field(description="The oldest entry the run's stream still holds; null if it holds none.")
    first_seq: int | None = Field(description="Its `seq` (null if it holds none, or it is not a livestats event).")
    trimmed: bool = Field(description="Events before `first_seq` are gone: history was trimmed (`first_seq` > 1).")
    gap: bool = Field(
        description="Events between `after` (or the start of the run) and this page are gone: it does not "
        "continue from the position asked for. Start again from the snapshot (docs/api.md, Continuity)."
    )


class Cancelled(BaseModel):
    run_id: str
    status: str = Field(
        description="`cancelled` (it was queued or running: its end is written at once and its worker is told to "
        "kill its calls), or the terminal status the run already had (`stalled` stays `stalled`)."
    )


class Health(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reason: str | None = None


class QueueInfo(BaseModel):
    """Where a queued run waits and why (docs/scheduling.md)."""

    state: Literal["pending", "dispatched"] = Field(
        description="pending: in its principal's queue; dispatched: holds a slot, a worker starts it next."
    )
    position: int | None = Field(description="1 = the principal's next run; null once dispatched.")
    reason: str = Field(description="Why it waits, for people: e.g. `3rd in your queue`.")
    running: int = Field(description="The principal's runs holding worker slots.")
    concurrent_limit: int = Field(description="The principal's concurrent-run quota (0 = none).")
    worker_slots: int = Field(description="Slots advertised by live workers.")
    worker_slots_busy: int = Field(description="Slots held by dispatched runs.")
    principals_waiting: int = Field(description="Principals with runs waiting (each takes turns).")


class RunView(RunSnapshot):
    """The run's snapshot; `queue` is set while it is queued."""

    queue: QueueInfo | None = None
