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
