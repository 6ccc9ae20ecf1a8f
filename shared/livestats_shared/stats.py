"""The run snapshot as a fold of the event stream.

`delta_for` is the single definition of how an event changes a run's stats hash. The publish
script applies it atomically with the XADD; `fold` applies it in Python to a list of events.
Both must agree: the test suite folds a real stream and compares it with the real hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, computed_field

from .events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    Complexity,
    Event,
    EventData,
    FailureReason,
    Heartbeat,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
)
from .pricing import NANO_PER_USD

UNKNOWN_MODEL = "unknown"  # an attempt whose answer and phase named no model

# Hash fields the publish script maintains itself (not part of any delta).
SEQ = "seq"
LAST_TS = "last_ts"
LAST_TYPE = "last_type"
LAST_ID = "last_id"
PRODUCER_PREFIX = "producer:"


_NOTHING: Mapping[str, Any] = MappingProxyType({})


class Delta(NamedTuple):
    """One event's effect on the stats hash. Read-only (a NamedTuple, not a frozen dataclass:
    one is built per published event, and a frozen dataclass costs several times as much)."""

    incr: Mapping[str, int] = _NOTHING
    set: Mapping[str, str] = _NOTHING
    delete: tuple[str, ...] = ()
    finished: bool = False  # terminal event: the script applies the retention TTL


_new_delta = tuple.__new__
_STARTED: Mapping[str, int] = MappingProxyType({"attempts_started": 1, "in_flight": 1})


def _num(x: float) -> str:
    return f"{x:.3f}"


def phase_field(phase: str, what: str) -> str:
    return f"phase:{phase}:{what}"


def delta_for(data: EventData, ts: int) -> Delta:
    """How one event changes the stats hash. Pure; values are the exact strings stored."""
    match data:
        # Most frequent first: a class pattern that misses costs an isinstance check (pydantic's
        # metaclass makes that slow), and these types are disjoint, so the order changes nothing else.
        case CallStarted():
            started: Mapping[str, int] = _STARTED  # shared: a Delta is read-only
            if data.attempt == 1 and data.predicted_tokens is not None:
                started = {"attempts_started": 1, "in_flight": 1, "predicted_tokens": data.predicted_tokens}
            # tuple.__new__: the NamedTuple constructor is a Python function, and this runs per event
            return _new_delta(Delta, (started, {"current_call": f"{data.phase}#{data.call}"}, (), False))
        case CallSucceeded():
            incr = {
                "successful_calls": 1,
                "in_flight": -1,
                "calls_done": 1,
                phase_field(data.phase, "done"): 1,
            }
            if data.usage is not None:
                incr[phase_field(data.phase, "actual_tokens")] = data.usage.total_tokens
            _spend(data, incr)
            # A later success clears the last error; the error stays in the stream and the counts.
            return Delta(incr=incr, delete=("last_error",))
        case CallFailed():
            incr = {"failed_attempts": 1, "in_flight": -1 if data.started else 0}
            if data.final:
                incr.update({"calls_done": 1, "calls_given_up": 1})
                incr[phase_field(data.phase, "done")] = 1
                incr[phase_field(data.phase, "given_up")] = 1
            if data.reason is FailureReason.TRUNCATED:
                incr["truncated"] = 1
                incr[phase_field(data.phase, "truncated")] = 1
            _spend(data, incr)
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
            if data.tags:
                sets["tags"] = orjson.dumps(data.tags).decode()
            for p in data.phases:
                sets[phase_field(p.name, "planned")] = str(p.calls)
                if p.model is not None:
                    sets[phase_field(p.name, "model")] = p.model
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


def model_field(model: str, what: str) -> str:
    return f"model:{model}:{what}"


def _spend(data: CallSucceeded | CallFailed, incr: dict[str, int]) -> None:
    """Tokens and cost of an attempt that reported usage, for the run, its phase and its model.
    An attempt whose model has no price counts as unpriced: the cost is then known to be
    incomplete, never silently 0."""
    if data.usage is None:
        return
    u = data.usage
    incr.update(input_tokens=u.input_tokens, output_tokens=u.output_tokens, total_tokens=u.total_tokens)
    model = data.model or UNKNOWN_MODEL
    incr[model_field(model, "attempts")] = 1
    incr[model_field(model, "input_tokens")] = u.input_tokens
    incr[model_field(model, "output_tokens")] = u.output_tokens
    if data.cost_nusd is None:
        incr["unpriced_attempts"] = 1
        incr[phase_field(data.phase, "unpriced_attempts")] = 1
        incr[model_field(model, "unpriced_attempts")] = 1
    else:
        incr["cost_nusd"] = data.cost_nusd
        incr[phase_field(data.phase, "cost_nusd")] = data.cost_nusd
        incr[model_field(model, "cost_nusd")] = data.cost_nusd


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
    truncated: int = 0  # attempts whose answer was cut short (stop reason max_tokens / length)
    model: str | None = None  # declared by the spec
    cost_nusd: int = 0  # priced attempts' cost, nano-USD
    unpriced_attempts: int = 0  # attempts with usage whose model had no price: the cost is incomplete

    @property
    def used_tokens(self) -> int:
        """The phase's actual tokens: the total it stated (a producer without call events has no
        other figure), else the sum its answers reported."""
        return self.actual_tokens if self.reported_tokens is None else self.reported_tokens

    is_test: bool = False


class ModelSpend(BaseModel):
    """What one model's attempts in a run used and cost (attempts that reported usage)."""

    model_config = ConfigDict(frozen=True)
    model: str
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nusd: int = 0
    unpriced_attempts: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float | None:
        return None if self.unpriced_attempts else self.cost_nusd / NANO_PER_USD


def _models(h: Mapping[str, str]) -> list[ModelSpend]:
    fields: dict[str, dict[str, int]] = {}
    for key, value in h.items():
        if key.startswith("model:"):
            model, _, what = key[len("model:") :].rpartition(":")
            fields.setdefault(model, {})[what] = int(value)
    return [ModelSpend(model=m, **f) for m, f in sorted(fields.items())]


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
    tags: list[str] = []
    truncated: int = 0  # attempts whose answer was cut short
    cost_nusd: int = 0  # priced attempts' cost, nano-USD (1e-9 USD)
    unpriced_attempts: int = 0  # attempts with usage whose model had no price: cost_nusd is a lower bound
    phases: list[PhaseProgress] = []
    models: list[ModelSpend] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float | None:
        """The run's cost in USD; None (unknown) while any attempt with usage had no price."""
        return None if self.unpriced_attempts else self.cost_nusd / NANO_PER_USD

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
                truncated=int(h.get(phase_field(n, "truncated"), 0)),
                model=h.get(phase_field(n, "model")),
                cost_nusd=int(h.get(phase_field(n, "cost_nusd"), 0)),
                unpriced_attempts=int(h.get(phase_field(n, "unpriced_attempts"), 0)),
                is_test=h.get(phase_field(n, "is_test")) == "1",
            )
            for n in names
        ]
        scalar: dict[str, object] = {
            k: v for k, v in h.items() if k in cls.model_fields and k not in ("phases", "tags", "models")
        }
        if "tags" in h:
            scalar["tags"] = orjson.loads(h["tags"])
        scalar["models"] = _models(h)
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
