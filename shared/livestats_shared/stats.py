"""The run snapshot as a fold of the event stream.

`delta_for` is the single definition of how an event changes a run's stats hash. The publish
script applies it atomically with the XADD; `fold` applies it in Python to a list of events.
Both must agree: the test suite folds a real stream and compares it with the real hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from .events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    Complexity,
    Event,
    EventData,
    Heartbeat,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
)

# Hash fields the publish script maintains itself (not part of any delta).
SEQ = "seq"
LAST_TS = "last_ts"
LAST_TYPE = "last_type"
LAST_ID = "last_id"
PRODUCER_PREFIX = "producer:"


@dataclass(frozen=True)
class Delta:
    incr: dict[str, int] = field(default_factory=dict)
    set: dict[str, str] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    finished: bool = False  # terminal event: the script applies the retention TTL


def _num(x: float) -> str:
    return f"{x:.3f}"


def phase_field(phase: str, what: str) -> str:
    return f"phase:{phase}:{what}"


def delta_for(data: EventData, ts: int) -> Delta:
    """How one event changes the stats hash. Pure; values are the exact strings stored."""
    match data:
        case RunQueued():
            sets = {
                "status": "queued",
                "name": data.name,
                "planned_calls": str(data.planned_calls),
                "phases": orjson.dumps([p.name for p in data.phases]).decode(),
                "timeout_s": _num(data.timeout_s),
                "created_ts": str(ts),
            }
            if data.owner is not None:
                sets["owner"] = data.owner
            if data.team is not None:
                sets["team"] = data.team
            for p in data.phases:
                sets[phase_field(p.name, "planned")] = str(p.calls)
                sets.update(_estimate_fields(p.name, p.category, p.complexity, p.deliverables, p.predicted_tokens))
                if p.is_test:
                    sets[phase_field(p.name, "is_test")] = "1"
            if data.replay_of is not None:
                sets["replay_of"] = data.replay_of
            if data.spec.get("external") is True:
                sets["external"] = "1"  # the ingest API accepts events for this run only
            return Delta(set=sets)
        case RunStarted():
            sets = {
                "status": "running",
                "started_ts": str(ts),
                "worker": data.worker,
                "deadline_ts": str(data.deadline_ts),
                "retry_budget": str(data.retry_budget),
            }
            if data.heartbeat_s is not None:
                sets["heartbeat_s"] = _num(data.heartbeat_s)
            return Delta(set=sets)
        case PhaseStarted():
            sets = {
                "current_phase": data.phase,
                "phase_index": str(data.index),
                phase_field(data.phase, "state"): "running",
            }
            sets.update(
                _estimate_fields(data.phase, data.category, data.complexity, data.deliverables, data.predicted_tokens)
            )
            return Delta(set=sets)
        case PhaseFinished():
            sets = {phase_field(data.phase, "state"): data.state}
            if data.actual_tokens is not None:
                # The phase's own total: a producer without call events (a shell orchestrator)
                # has no other way to report tokens. Set, not counted: actual_tokens counts.
                sets[phase_field(data.phase, "reported_tokens")] = str(data.actual_tokens)
            return Delta(incr={"phases_done": 1}, set=sets)
        case CallStarted():
            incr = {"attempts_started": 1, "in_flight": 1}
            if data.attempt == 1 and data.predicted_tokens is not None:
                incr["predicted_tokens"] = data.predicted_tokens
            return Delta(incr=incr, set={"current_call": f"{data.phase}#{data.call}"})
        case CallSucceeded():
            incr = {
                "successful_calls": 1,
                "in_flight": -1,
                "calls_done": 1,
                phase_field(data.phase, "done"): 1,
            }
            if data.usage is not None:
                incr["input_tokens"] = data.usage.input_tokens
                incr["output_tokens"] = data.usage.output_tokens
                incr["total_tokens"] = data.usage.total_tokens
                incr[phase_field(data.phase, "actual_tokens")] = data.usage.total_tokens
            # A later success clears the last error; the error stays in the stream and the counts.
            return Delta(incr=incr, delete=("last_error",))
        case CallFailed():
            incr = {"failed_attempts": 1, "in_flight": -1 if data.started else 0}
            if data.final:
                incr.update({"calls_done": 1, "calls_given_up": 1})
                incr[phase_field(data.phase, "done")] = 1
                incr[phase_field(data.phase, "given_up")] = 1
            last_error = {
                "phase": data.phase,
                "call": data.call,
                "attempt": data.attempt,
                "reason": data.reason.value,
                "excerpt": data.excerpt,
                "ts": ts,
            }
            return Delta(incr=incr, set={"last_error": orjson.dumps(last_error).decode()})
        case CallRetrying():
            return Delta(incr={"retries": 1})
        case Heartbeat():
            return Delta(
                set={
                    "heartbeat_ts": str(ts),
                    "elapsed_s": _num(data.elapsed_s),
                    "remaining_s": _num(data.remaining_s),
                }
            )
        case RunFinished():
            sets = {
                "status": data.outcome.value,
                "outcome": data.outcome.value,
                "reason": data.reason,
                "detail": data.detail,
                "finished_ts": str(ts),
            }
            if data.elapsed_s is not None:
                sets["elapsed_s"] = _num(data.elapsed_s)
            if data.remaining_s is not None:
                sets["remaining_s"] = _num(data.remaining_s)  # frozen: no later heartbeat changes it
            return Delta(set=sets, finished=True)
    raise TypeError(f"no stats delta defined for {type(data).__name__}")


def _estimate_fields(
    phase: str, category: str | None, complexity: str | None, deliverables: int | None, predicted: int | None
) -> dict[str, str]:
    """A phase's estimation fields that are known (set, never counted: the plan states them)."""
    known = {
        "category": category,
        "complexity": complexity,
        "deliverables": deliverables,
        "predicted_tokens": predicted,
    }
    return {phase_field(phase, k): str(v) for k, v in known.items() if v is not None}


def apply(stats: dict[str, str], delta: Delta) -> None:
    """Apply a delta to an in-memory hash exactly as the publish script does in Redis."""
    for key, n in delta.incr.items():
        stats[key] = str(int(stats.get(key, "0")) + n)
    stats.update(delta.set)
    for key in delta.delete:
        stats.pop(key, None)


def fold(events: Iterable[Event]) -> dict[str, str]:
    """The stats hash a sequence of events produces (script-maintained bookkeeping included)."""
    stats: dict[str, str] = {}
    for event in events:
        stats[SEQ] = str(int(stats.get(SEQ, "0")) + 1)
        apply(stats, delta_for(event.payload(), event.ts))
        stats[LAST_TS] = str(event.ts)
        stats[LAST_TYPE] = event.type
        if event.id is not None:
            stats[LAST_ID] = event.id
    return stats


class PhaseProgress(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    planned: int = 0
    done: int = 0
    given_up: int = 0  # calls of this phase that failed for good
    # running, then one final state (events.PhaseState); None before the phase starts
    state: str | None = None
    category: str | None = None
    complexity: Complexity | None = None
    deliverables: int | None = None
    predicted_tokens: int | None = None  # the whole phase's prediction
    actual_tokens: int = 0  # tokens the phase's answers reported (live)
    reported_tokens: int | None = None  # the total its phase.finished stated, if any

    @property
    def used_tokens(self) -> int:
        """The phase's actual tokens: the total it stated (a producer without call events has no
        other figure), else the sum its answers reported."""
        return self.actual_tokens if self.reported_tokens is None else self.reported_tokens

    is_test: bool = False


class RunSnapshot(BaseModel):
    """A typed view of the stats hash, for APIs and UIs."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    status: str = "unknown"
    name: str = ""
    seq: int = 0
    last_id: str | None = None
    planned_calls: int = 0
    attempts_started: int = 0  # every call.started (first attempts and retries)
    successful_calls: int = 0  # calls that succeeded (one success per call)
    failed_attempts: int = 0  # every call.failed, retried or not
    calls_given_up: int = 0  # calls that failed for good (call.failed with final=true)
    calls_done: int = 0
    retries: int = 0
    in_flight: int = 0
    current_phase: str | None = None
    current_call: str | None = None
    last_error: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    predicted_tokens: int = 0
    created_ts: int | None = None
    started_ts: int | None = None
    finished_ts: int | None = None
    deadline_ts: int | None = None
    heartbeat_ts: int | None = None
    heartbeat_s: float | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    outcome: str | None = None
    reason: str | None = None
    detail: str | None = None
    worker: str | None = None
    external: bool = False  # events come from an external producer, not a worker
    owner: str | None = None  # who submitted it (None: an operator tool; admins only)
    team: str | None = None  # shared with this team
    replay_of: str | None = None  # the run this one replays
    phases: list[PhaseProgress] = []

    @classmethod
    def from_hash(cls, run_id: str, h: Mapping[str, str]) -> RunSnapshot:
        h = _renamed_v1_fields(h)
        names: list[str] = orjson.loads(h["phases"]) if "phases" in h else []
        phases = [
            PhaseProgress(
                name=n,
                planned=int(h.get(phase_field(n, "planned"), 0)),
                done=int(h.get(phase_field(n, "done"), 0)),
                given_up=int(h.get(phase_field(n, "given_up"), 0)),
                state=h.get(phase_field(n, "state")),
                category=h.get(phase_field(n, "category")),
                complexity=h.get(phase_field(n, "complexity")),
                deliverables=_opt_int(h.get(phase_field(n, "deliverables"))),
                predicted_tokens=_opt_int(h.get(phase_field(n, "predicted_tokens"))),
                actual_tokens=int(h.get(phase_field(n, "actual_tokens"), 0)),
                reported_tokens=_opt_int(h.get(phase_field(n, "reported_tokens"))),
                is_test=h.get(phase_field(n, "is_test")) == "1",
            )
            for n in names
        ]
        scalar: dict[str, object] = {k: v for k, v in h.items() if k in cls.model_fields and k != "phases"}
        if "last_error" in h:
            scalar["last_error"] = orjson.loads(h["last_error"])
        return cls.model_validate({**scalar, "run_id": run_id, "phases": phases})


# Envelope v1 named failed attempts `failed_calls` next to `calls_failed` (calls given up): the
# v2 names cannot be confused. A run written before the rename keeps its old hash until it
# expires; it reads under the new names.
V1_FIELD_NAMES = {
    "total_calls": "attempts_started",
    "failed_calls": "failed_attempts",
    "calls_failed": "calls_given_up",
}


def _renamed_v1_fields(h: Mapping[str, str]) -> Mapping[str, str]:
    if "total_calls" not in h and "failed_calls" not in h and "calls_failed" not in h:
        return h
    renamed = {V1_FIELD_NAMES.get(k, k): v for k, v in h.items()}
    for k, v in h.items():
        if k.startswith("phase:") and k.endswith(":failed"):
            renamed.setdefault(k[: -len("failed")] + "given_up", v)
    return renamed


def _opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)
