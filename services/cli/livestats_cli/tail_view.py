"""What `livestats tail` draws: counters, a progress bar per phase and the last events.

On a terminal the whole view is redrawn in place (cursor up, clear to the end of the screen),
at most `min_interval_s` apart; elsewhere (a pipe, a log) each event is a plain line and the
counters a line of their own whenever they changed, at most `min_interval_s` apart.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import TextIO

from livestats_shared.events import Event
from livestats_shared.stats import RunSnapshot, apply, delta_for

from .terminal import safe

_BAR = 24  # characters per progress bar


def describe(event: Event) -> str:
    """One event as a short line: time, seq, type and what matters about it."""
    d = event.data
    when = datetime.fromtimestamp(event.ts / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    what = ""
    if "phase" in d and "call" in d:
        what = f"{d['phase']}#{d['call']}" + (f" attempt {d['attempt']}" if d.get("attempt", 1) > 1 else "")
    elif "phase" in d:
        what = str(d["phase"])
    match event.type:
        case "call.succeeded":
            what += f" {d['duration_s']:.2f} s"
        case "call.failed" | "call.retrying":
            what += f" {d['reason']}"
        case "run.finished":
            what = f"{d['outcome']} ({d['reason']})"
        case "heartbeat":
            what = f"{d['in_flight']} in flight, {d['remaining_s']:.0f} s left"
    return f"{when} #{event.seq} {event.type} {what}".rstrip()


def bar(done: int, planned: int) -> str:
    filled = min(_BAR, int(_BAR * done / planned)) if planned else 0
    return "[" + "#" * filled + "." * (_BAR - filled) + "]"


class TailView:
    def __init__(
        self, run_id: str, out: TextIO, *, tty: bool, events_shown: int = 10, min_interval_s: float = 0.1
    ) -> None:
        self.run_id = run_id
        self.out = out
        self.tty = tty
        self.stats: dict[str, str] = {}
        self.recent: deque[str] = deque(maxlen=events_shown)
        self.min_interval_s = min_interval_s
        self._drawn_lines = 0
        self._last_draw = 0.0
        self._last_counters = ""

    def start(self, stats: dict[str, str], recent: list[Event]) -> None:
        """Begin from a snapshot and the events that led to it (oldest first)."""
        self.stats = dict(stats)
        for event in recent:
            self.recent.append(describe(event))
        if not self.tty:
            self.summary()
        self.render(force=True)

    def update(self, event: Event) -> None:
        apply(self.stats, delta_for(event.payload(), event.ts))
        self.stats["seq"] = str(event.seq)
        line = describe(event)
        self.recent.append(line)
        if not self.tty:
            self.out.write(line + "\n")
        self.render(force=event.type in ("phase.started", "phase.finished", "run.finished"))
        if event.type == "run.finished" and not self.tty:
            self.summary()

    def summary(self) -> None:
        """Plain output: the run's status and a bar per phase, at the start and the end."""
        lines = self.lines()
        phases = len(self.snapshot().phases)
        self.out.write("\n".join([lines[0], *lines[2 : 2 + phases]]) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A message outside the view (connection lost, resumed)."""
        self.recent.append(f"-- {text}")
        if not self.tty:
            self.out.write(f"-- {safe(text)}\n")
            self.out.flush()
        self.render(force=True)

    def snapshot(self) -> RunSnapshot:
        return RunSnapshot.from_hash(self.run_id, self.stats)

    def render(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval_s:
            if not self.tty:
                self.out.flush()
            return
        self._last_draw = now
        if self.tty:
            lines = self.lines()
            up = f"\x1b[{self._drawn_lines}F" if self._drawn_lines else ""
            self.out.write(up + "\x1b[J" + "\n".join(lines) + "\n")
            self._drawn_lines = len(lines)
        else:
            counters = self.counters()
            if counters != self._last_counters:
                self._last_counters = counters
                self.out.write(counters + "\n")
        self.out.flush()

    def counters(self) -> str:
        s = self.snapshot()
        line = (
            f"calls {s.calls_done}/{s.planned_calls} done, ok {s.successful_calls}, "
            f"failed attempts {s.failed_attempts}, given up {s.calls_given_up}, "
            f"retries {s.retries}, in flight {s.in_flight}, tokens {s.total_tokens:,}"
        )
        if s.predicted_tokens:
            line += f" (predicted {s.predicted_tokens:,})"
        return line

    def lines(self) -> list[str]:
        s = self.snapshot()
        head = f"run {s.run_id} '{safe(s.name)}': {s.status}"
        if s.outcome and s.reason:
            head += f" ({s.reason})"
        if s.worker:
            head += f" on {s.worker}"
        out = [head, self.counters()]
        width = max((len(p.name) for p in s.phases), default=0)
        for p in s.phases:
            marker = ">" if p.name == s.current_phase and s.finished_ts is None else " "
            failed = f", {p.given_up} given up" if p.given_up else ""
            out.append(f"{marker} {safe(p.name):<{width}} {bar(p.done, p.planned)} {p.done}/{p.planned}{failed}")
        out.append("last events:")
        out.extend(f"  {line}" for line in self.recent)
        return out
