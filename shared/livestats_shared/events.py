"""The event contract: a versioned envelope and one payload model per event type.

An event on the wire (WebSocket, NDJSON export) is the envelope as JSON:
    {"v": 2, "type": "call.failed", "run_id": "...", "seq": 17, "ts": 1763770000123, "data": {...}}
In a Redis stream the same envelope is stored flat (`v`, `type`, `run_id`, `seq`, `ts`) with
`data` as one JSON field, so `redis-cli XRANGE` stays readable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidEvent
from .ids import NAME_PATTERN, RunId, validate_run_id

# 2: `phase.finished.failed` became `given_up`; the stats fields total_calls / failed_calls /
# calls_failed became attempts_started / failed_attempts / calls_given_up (docs/contract.md).
# v1 events still parse (the old field is accepted as an alias).
SCHEMA_VERSION = 2


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    STALLED = "stalled"


class FailureReason(StrEnum):
    """Why one FPF call attempt did not produce a usable answer."""

    TIMEOUT = "timeout"  # per-call timeout; the process group was killed
    KILLED = "killed"  # the process died from a signal we did not send (crash, OOM killer)
    EXIT_CODE = "exit_code"  # non-zero exit status, whatever it printed
    EMPTY = "empty"  # no output at all
    NOT_UTF8 = "not_utf8"  # output is not valid UTF-8 (binary, wrong encoding)
    INVALID_JSON = "invalid_json"  # json mode: output does not parse
    TOO_SMALL = "too_small"  # text mode: fewer bytes than the phase's min_bytes
    TOO_LARGE = "too_large"  # more output than max_output_bytes; the process group was killed
    SPAWN_ERROR = "spawn_error"  # the command could not be started (not retried)
    CANCELLED = "cancelled"  # the run was cancelled, timed out or shut down mid-call


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str]


class TokenUsage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


Complexity = Literal["low", "medium", "high", "maintenance"]
# Categories are open-ended (implementation, refactoring, testing, ...) but become report keys
# and stats-hash values: short lowercase words only.
CATEGORY_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"


class PhasePlan(BaseModel):
    """A phase as planned. The estimation fields are optional (streams without them parse):
    `predicted_tokens` is the whole phase's prediction (the spec's per-call prediction x calls)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    calls: int
    category: str | None = Field(None, pattern=CATEGORY_PATTERN)  # implementation, testing, ...
    complexity: Complexity | None = None
    deliverables: int | None = Field(None, ge=1)
    predicted_tokens: int | None = Field(None, ge=0)
    is_test: bool = False  # a test sample: excluded from estimation summaries


class RunQueued(_Data):
    TYPE = "run.queued"
    name: str
    planned_calls: int = Field(ge=0)
    phases: list[PhasePlan]
    timeout_s: float
    spec: dict[str, Any] = Field(default_factory=dict)
    # Who submitted the run, and the team it is shared with: the gateway shows a run only to
    # them (and to admins). None for runs made by operator tools straight through Redis.
    owner: str | None = Field(None, pattern=NAME_PATTERN)
    team: str | None = Field(None, pattern=NAME_PATTERN)
    replay_of: str | None = None  # the run this one re-publishes (`livestats replay`)


class RunStarted(_Data):
    TYPE = "run.started"
    worker: str
    timeout_s: float
    deadline_ts: int  # epoch ms
    retry_budget: int
    # The worker's heartbeat interval: the gateway marks the run `stalled` after two missed
    # beats plus a margin. None (older workers): the gateway's default applies.
    heartbeat_s: float | None = Field(None, gt=0)


class PhaseStarted(_Data):
    TYPE = "phase.started"
    phase: str
    index: int
    calls: int
    concurrency: int
    # The phase's estimation fields, as in PhasePlan (optional).
    category: str | None = Field(None, pattern=CATEGORY_PATTERN)
    complexity: Complexity | None = None
    deliverables: int | None = Field(None, ge=1)
    predicted_tokens: int | None = Field(None, ge=0)


class PhaseFinished(_Data):
    TYPE = "phase.finished"
    phase: str
    index: int
    succeeded: int
    # Calls of the phase that failed for good (v1 called it `failed`, which is still read).
    given_up: int = Field(validation_alias=AliasChoices("given_up", "failed"))
    duration_s: float
    # Tokens the phase's answers reported using (sum of their usage); None if none reported.
    actual_tokens: int | None = Field(None, ge=0)


class CallStarted(_Data):
    TYPE = "call.started"
    phase: str
    call: int
    attempt: int = Field(ge=1)
    pid: int | None = None
    predicted_tokens: int | None = None


class CallSucceeded(_Data):
    TYPE = "call.succeeded"
    phase: str
    call: int
    attempt: int = Field(ge=1)
    duration_s: float
    bytes: int
    usage: TokenUsage | None = None


class CallFailed(_Data):
    TYPE = "call.failed"
    phase: str
    call: int
    attempt: int = Field(ge=1)
    reason: FailureReason
    excerpt: str = ""
    exit_code: int | None = None
    duration_s: float
    final: bool  # no further attempt will be made for this call


class CallRetrying(_Data):
    TYPE = "call.retrying"
    phase: str
    call: int
    attempt: int = Field(ge=2)  # the attempt about to be made
    reason: FailureReason
    delay_s: float


class Heartbeat(_Data):
    TYPE = "heartbeat"
    elapsed_s: float
    remaining_s: float
    in_flight: int
    pids: list[int]


class RunFinished(_Data):
    TYPE = "run.finished"
    outcome: Outcome
    reason: str
    detail: str = ""
    elapsed_s: float | None = None


EventData = (
    RunQueued
    | RunStarted
    | PhaseStarted
    | PhaseFinished
    | CallStarted
    | CallSucceeded
    | CallFailed
    | CallRetrying
    | Heartbeat
    | RunFinished
)
DATA_MODELS: dict[str, type[_Data]] = {
    m.TYPE: m
    for m in (
        RunQueued,
        RunStarted,
        PhaseStarted,
        PhaseFinished,
        CallStarted,
        CallSucceeded,
        CallFailed,
        CallRetrying,
        Heartbeat,
        RunFinished,
    )
}
EventType = Literal[
    "run.queued",
    "run.started",
    "phase.started",
    "phase.finished",
    "call.started",
    "call.succeeded",
    "call.failed",
    "call.retrying",
    "heartbeat",
    "run.finished",
]


class Event(BaseModel):
    """The versioned envelope. `seq` is contiguous per run from 1, assigned by the publish script."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    v: int = SCHEMA_VERSION
    type: EventType
    run_id: RunId
    seq: int = Field(ge=1)
    ts: int  # epoch milliseconds when the producer created the event
    data: dict[str, Any]
    id: str | None = None  # Redis stream entry id, when read from a stream

    def payload(self) -> EventData:
        """The typed payload model for this event's type."""
        return parse_data(self.type, self.data)  # type: ignore[return-value]

    @classmethod
    def from_stream_entry(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
        """Decode one XRANGE/XREAD entry."""
        try:
            return cls(
                v=int(fields[b"v"]),
                type=fields[b"type"].decode(),
                run_id=validate_run_id(fields[b"run_id"].decode()),
                seq=int(fields[b"seq"]),
                ts=int(fields[b"ts"]),
                data=orjson.loads(fields[b"data"]),
                id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            )
        except (KeyError, ValueError, ValidationError, orjson.JSONDecodeError) as exc:
            raise InvalidEvent(f"stream entry {entry_id!r} is not a livestats event: {exc}") from exc


def parse_data(event_type: str, data: dict[str, Any]) -> _Data:
    model = DATA_MODELS.get(event_type)
    if model is None:
        raise InvalidEvent(f"unknown event type {event_type!r}; known: {sorted(DATA_MODELS)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {event_type} payload: {exc}") from exc
