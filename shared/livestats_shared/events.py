"""The event contract: a versioned envelope and one payload model per event type.

An event on the wire (WebSocket, NDJSON export) is the envelope as JSON:
    {"v": 2, "type": "call.failed", "run_id": "...", "seq": 17, "ts": 1763770000123, "data": {...}}
In a Redis stream the same envelope is stored flat (`v`, `type`, `run_id`, `seq`, `ts`) with
`data` as one JSON field, so `redis-cli XRANGE` stays readable.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InvalidEvent
from .ids import MODEL_PATTERN, NAME_PATTERN, RunId, validate_run_id

# 2: `phase.finished.failed` became `given_up`; the stats fields total_calls / failed_calls /
# calls_failed became attempts_started / failed_attempts / calls_given_up (docs/contract.md).
# v1 events still parse (the old field is accepted as an alias).
SCHEMA_VERSION = 2

# Ranges (docs/contract.md, "Numbers in range"). Browsers read integers exactly only up to
# 2^53-1, and Redis counters are signed 64-bit: every count and token figure stays below 2^53.
MAX_SAFE_INT = 2**53 - 1
MAX_SECONDS = 1e9  # ~31.7 years: any real duration, never 1e308 written as 309 digits
MAX_PID = 2**31 - 1
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
EpochMs = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
Attempt = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
# Phase names as run specs allow them (spec.py): they become hash field names and the publish
# script's check fields, so they hold no separator (tab, NUL, ':').
PHASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PhaseName = Annotated[str, Field(pattern=PHASE_PATTERN)]
# Floats are finite everywhere: json.loads accepts NaN and Infinity, pydantic too unless told not to.
_STRICT_NUMBERS = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    TRUNCATED = "truncated"  # the answer says it was cut short (stop reason max_tokens / length)
    INVALID_USAGE = "invalid_usage"  # usage figures out of range (negative, over 2^53-1, not finite)


class PhaseState(StrEnum):
    """A phase's state in the snapshot: `running`, then exactly one final state."""

    RUNNING = "running"
    FINISHED = "finished"  # every call of the phase ended (succeeded or given up)
    FAILED = "failed"  # the run ended failed while the phase was open (or before it started)
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    STALLED = "stalled"


PhaseEndState = Literal["finished", "failed", "timed_out", "cancelled", "stalled"]


def phase_end_state(outcome: Outcome) -> PhaseEndState:
    """The final state a phase still open at the end of a run gets from the run's outcome."""
    return "finished" if outcome is Outcome.SUCCEEDED else outcome.value  # type: ignore[return-value]


class _Data(BaseModel):
    model_config = _STRICT_NUMBERS
    TYPE: ClassVar[str]


class TokenUsage(BaseModel):
    model_config = _STRICT_NUMBERS
    input_tokens: Count = 0
    output_tokens: Count = 0
    # Part of input_tokens the provider served from its prompt cache (priced apart when the
    # price table says so).
    cached_input_tokens: Count = 0

    @model_validator(mode="after")
    def _total_in_range(self) -> TokenUsage:
        if self.total_tokens > MAX_SAFE_INT:
            raise ValueError(f"input_tokens + output_tokens must be at most 2^53-1 ({MAX_SAFE_INT})")
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens are part of input_tokens: they cannot exceed them")
        return self

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

    model_config = _STRICT_NUMBERS
    name: PhaseName
    calls: Count
    category: str | None = Field(None, pattern=CATEGORY_PATTERN)  # implementation, testing, ...
    complexity: Complexity | None = None
    deliverables: int | None = Field(None, ge=1, le=MAX_SAFE_INT)
    predicted_tokens: Count | None = None
    is_test: bool = False  # a test sample: excluded from estimation summaries
    model: str | None = Field(None, pattern=MODEL_PATTERN)  # the model the phase's FPF is set up with


class RunQueued(_Data):
    TYPE = "run.queued"
    name: str
    planned_calls: Count
    phases: list[PhasePlan]
    timeout_s: Seconds
    spec: dict[str, Any] = Field(default_factory=dict)
    # Who submitted the run, and the team it is shared with: the gateway shows a run only to
    # them (and to admins). None for runs made by operator tools straight through Redis.
    owner: str | None = Field(None, pattern=NAME_PATTERN)
    team: str | None = Field(None, pattern=NAME_PATTERN)
    replay_of: str | None = None  # the run this one re-publishes (`livestats replay`)
    tags: list[str] = Field(default_factory=list, max_length=20)  # free labels to find and compare runs by


class RunStarted(_Data):
    TYPE = "run.started"
    worker: str
    timeout_s: Seconds
    deadline_ts: EpochMs
    retry_budget: Count
    # The worker's heartbeat interval: the gateway marks the run `stalled` after two missed
    # beats plus a margin. None (older workers): the gateway's default applies.
    heartbeat_s: float | None = Field(None, gt=0, le=MAX_SECONDS)


class PhaseStarted(_Data):
    TYPE = "phase.started"
    phase: PhaseName
    index: Count
    calls: Count
    concurrency: int = Field(ge=1, le=MAX_SAFE_INT)
    # The phase's estimation fields, as in PhasePlan (optional).
    category: str | None = Field(None, pattern=CATEGORY_PATTERN)
    complexity: Complexity | None = None
    deliverables: int | None = Field(None, ge=1, le=MAX_SAFE_INT)
    predicted_tokens: Count | None = None
    model: str | None = Field(None, pattern=MODEL_PATTERN)  # declared by the spec; answers may name another


class PhaseFinished(_Data):
    TYPE = "phase.finished"
    phase: PhaseName
    index: Count
    succeeded: Count
    # Calls of the phase that failed for good (v1 called it `failed`, which is still read).
    given_up: Count = Field(validation_alias=AliasChoices("given_up", "failed"))
    duration_s: Seconds
    # Tokens the phase's answers reported using (sum of their usage); None if none reported.
    actual_tokens: Count | None = None
    # How the phase ended: `finished` when its calls ran out, else the state the run's end gave
    # it (a phase still open, or never started, when the run was cancelled, timed out, ...).
    state: PhaseEndState = "finished"


class CallStarted(_Data):
    TYPE = "call.started"
    phase: PhaseName
    call: Count
    attempt: Attempt
    pid: int | None = Field(None, ge=1, le=MAX_PID)
    predicted_tokens: Count | None = None


class CallSucceeded(_Data):
    TYPE = "call.succeeded"
    phase: PhaseName
    call: Count
    attempt: Attempt
    duration_s: Seconds
    bytes: Count
    usage: TokenUsage | None = None
    model: str | None = Field(None, pattern=MODEL_PATTERN)  # as the answer stated it, else the phase's
    stop_reason: str | None = Field(None, max_length=64)  # as the answer stated it (end_turn, stop, ...)
    # What the attempt cost at the price in effect when it ended, in nano-USD (pricing.py);
    # None when its model has no price (unknown, never 0) or it reported no usage.
    cost_nusd: Count | None = None


class CallFailed(_Data):
    TYPE = "call.failed"
    phase: PhaseName
    call: Count
    attempt: Attempt
    reason: FailureReason
    excerpt: str = ""
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    duration_s: Seconds
    final: bool  # no further attempt will be made for this call
    # False: the call was given up while waiting for this attempt, whose process never started
    # (the run ended during a retry's backoff). It was never in flight, so in_flight is unchanged.
    started: bool = True
    # A failed attempt that still reported usage (a truncated answer) cost money too.
    usage: TokenUsage | None = None
    model: str | None = Field(None, pattern=MODEL_PATTERN)
    stop_reason: str | None = Field(None, max_length=64)
    cost_nusd: Count | None = None


class CallRetrying(_Data):
    TYPE = "call.retrying"
    phase: PhaseName
    call: Count
    attempt: int = Field(ge=2, le=MAX_SAFE_INT)  # the attempt about to be made
    reason: FailureReason
    delay_s: Seconds


class Heartbeat(_Data):
    TYPE = "heartbeat"
    elapsed_s: Seconds
    remaining_s: Seconds
    in_flight: Count
    pids: list[Annotated[int, Field(ge=1, le=MAX_PID)]] = Field(max_length=100_000)


class RunFinished(_Data):
    TYPE = "run.finished"
    outcome: Outcome
    reason: str
    detail: str = ""
    elapsed_s: Seconds | None = None
    # Time left before the deadline when the run ended (frozen: elapsed + remaining = timeout
    # while the run ended before its deadline, 0 after it). None: no deadline known.
    remaining_s: Seconds | None = None


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

    model_config = _STRICT_NUMBERS
    v: int = SCHEMA_VERSION
    type: EventType
    run_id: RunId
    seq: int = Field(ge=1, le=MAX_SAFE_INT)
    ts: EpochMs  # epoch milliseconds when the producer created the event
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
