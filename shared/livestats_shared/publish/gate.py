"""The lifecycle the publish script enforces, seen from Python: what each event tells the script's
state machine, why a write was refused, and how the lifecycle hash reads.

The state machine itself runs in publish.lua, atomically with the write (docs/contract.md,
"Lifecycle"). Its memory is the run's lifecycle hash (`keys.run_lifecycle`), written by the
script only, never part of the snapshot:

    v            1 once the run was queued under this gate (absent: an older run, status checks only)
    epoch        the current owner's fencing token (run.started takes 1; closers take the next)
    open_calls   attempts in flight       open_phases  phases running
    phase:<p>    q<index> planned | r<index>:<start ts> running | f ended
    open:<p>     attempts of phase p in flight
    call:<p>:<c> o<attempt>:<start ts> in flight | c<attempt> failed, may retry |
                 r<attempt> retry announced | d<attempt> ended for good
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..errors import LivestatsError
from ..events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    EventData,
    PhaseFinished,
    PhaseStarted,
    RunQueued,
)


class RefusalCode(StrEnum):
    """Why the gate refused an event."""

    FINISHED = "finished"  # the run has ended: nothing is written after run.finished
    FENCED = "fenced"  # the producer's epoch is no longer the run's owner
    STATE = "state"  # out of order for the lifecycle (call before run.started, ...)
    RANGE = "range"  # a counter would leave [0, 2^53-1]


class EventRefused(LivestatsError):
    """The publish script refused an event: it breaks the contract, and nothing of it was written.

    Not a PublishError (Redis is fine, the data is not: retrying cannot help), like
    RunStateConflict.

    `index` is the event's position in what was published together (0 for a single event).
    FINISHED and FENCED mean the producer no longer owns the run: it must stop.
    """

    def __init__(self, run_id: str, event_type: str, index: int, code: RefusalCode, message: str) -> None:
        self.run_id = run_id
        self.event_type = event_type
        self.index = index
        self.code = code
        self.message = message
        super().__init__(f"{event_type} for run {run_id} refused ({code}): {message}")

    @property
    def owner_lost(self) -> bool:
        return self.code in (RefusalCode.FINISHED, RefusalCode.FENCED)


Check = tuple[str, str, str, str]
NO_CHECK: Check = ("", "", "", "")


def check_of(data: EventData) -> Check:
    """What the script's state machine reads of `data`, as the strings (p, c, a, fs) that follow
    its type, ts and data in the script's entries (publish.lua, ARGV[11]): for a call its phase,
    number, attempt and (call.failed) `final` and `started` as two digits; for a phase event its
    name and index or end state; for run.queued its phase names, tab-separated (phase names hold
    no tab: events.PHASE_PATTERN). Numbers as decimal strings: the script makes hash field names
    of them, and a Lua number would print a large one in exponent form."""
    match data:
        case CallStarted() | CallSucceeded() | CallRetrying():
            return (data.phase, str(data.call), str(data.attempt), "")
        case CallFailed():
            return (data.phase, str(data.call), str(data.attempt), f"{data.final:d}{data.started:d}")
        case PhaseStarted():
            return (data.phase, str(data.index), "", "")
        case PhaseFinished():
            return (data.phase, data.state, "", "")
        case RunQueued():
            return ("\t".join(p.name for p in data.phases), "", "", "")
    return NO_CHECK


@dataclass(frozen=True)
class OpenCall:
    phase: str
    call: int
    attempt: int  # the attempt in flight, or the one a waiting call would make next
    in_flight: bool  # False: between attempts (failed, maybe retry announced)
    started_ms: int | None  # when the attempt in flight started


@dataclass(frozen=True)
class PhaseEntry:
    name: str
    index: int
    state: str  # planned | running | ended
    started_ms: int | None


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle hash, parsed: what a closer must end."""

    epoch: int | None
    calls: list[OpenCall]  # calls not ended for good
    phases: list[PhaseEntry]  # every phase the gate knows, in index order

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> Lifecycle:
        calls: list[OpenCall] = []
        phases: list[PhaseEntry] = []
        for field, value in h.items():
            if field.startswith("call:") and value[:1] in ("o", "c", "r"):
                phase, _, call = field[len("call:") :].rpartition(":")
                attempt, _, ts = value[1:].partition(":")
                state = value[0]
                n = int(attempt)
                calls.append(
                    OpenCall(
                        phase=phase,
                        call=int(call),
                        attempt=n if state in ("o", "r") else n + 1,
                        in_flight=state == "o",
                        started_ms=int(ts) if ts else None,
                    )
                )
            elif field.startswith("phase:"):
                kind = {"q": "planned", "r": "running", "f": "ended"}[value[0]]
                index, _, ts = value[1:].partition(":")
                phases.append(PhaseEntry(field[len("phase:") :], int(index or -1), kind, int(ts) if ts else None))
        epoch = h.get("epoch")
        calls.sort(key=lambda c: (c.phase, c.call))
        phases.sort(key=lambda p: p.index)
        return cls(epoch=int(epoch) if epoch else None, calls=calls, phases=phases)
