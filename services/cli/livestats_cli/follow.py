"""Following a run from the terminal: events via XREAD BLOCK (pushed, never polled) and a live
snapshot folded client-side with the same delta the publish script applies."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO

from livestats_shared import keys
from livestats_shared.errors import InvalidEvent
from livestats_shared.estimation import smape
from livestats_shared.events import Event
from livestats_shared.history import OnInvalid, decode_entry
from livestats_shared.stats import RunSnapshot, apply, delta_for
from redis.asyncio import Redis

from .terminal import safe


def report_invalid(exc: InvalidEvent) -> None:
    print(f"warning: skipped a malformed stream entry: {exc}", file=sys.stderr)


async def follow(
    redis: Redis, run_id: str, *, after: str = "0-0", block_ms: int = 1000, on_invalid: OnInvalid = report_invalid
) -> AsyncIterator[Event]:
    """Every event after `after`, then live ones, until the run's `run.finished`. Malformed
    entries are reported through `on_invalid` and skipped."""
    stream = keys.run_events(run_id)
    last = after
    while True:
        reply = await redis.xread({stream: last}, block=block_ms, count=1000)
        for _, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                event = decode_entry(entry_id, fields, on_invalid)
                if event is None:
                    continue
                yield event
                if event.type == "run.finished":
                    return


class ProgressView:
    """Prints notable events as lines and a compact progress line (rewritten in place on a TTY)."""

    def __init__(self, run_id: str, out: TextIO = sys.stdout) -> None:
        self.run_id = run_id
        self.out = out
        self.stats: dict[str, str] = {}
        self.tty = out.isatty()
        self._last_line = ""
        self._last_print = 0.0
        self._heartbeat_seen: float | None = None

    def update(self, event: Event) -> None:
        apply(self.stats, delta_for(event.payload(), event.ts))
        if event.type == "heartbeat":
            self._heartbeat_seen = time.monotonic()
        note = self._describe(event)
        if note:
            self._print(note)
        # On a terminal the line is rewritten in place; in a log, once a second is plenty.
        now = time.monotonic()
        if self.tty or note or now - self._last_print >= 1.0:
            self._last_print = now
            self._progress()

    def close(self) -> None:
        """End the progress line a terminal shows in place: the shell's prompt starts on a new line."""
        if self.tty and self._last_line:
            self.out.write("\n")
            self.out.flush()
            self._last_line = ""

    def snapshot(self) -> RunSnapshot:
        return RunSnapshot.from_hash(self.run_id, self.stats)

    def _describe(self, event: Event) -> str | None:
        d = event.data
        match event.type:
            case "run.started":
                worker = safe(d["worker"])
                return f"run started on {worker} (timeout {d['timeout_s']:g} s, retry budget {d['retry_budget']})"
            case "phase.started":
                return f"phase {safe(d['phase'])}: {d['calls']} calls, {d['concurrency']} at a time"
            case "phase.finished":
                given_up = d.get("given_up", d.get("failed", 0))  # v1 events named it `failed`
                phase = safe(d["phase"])
                done = f"phase {phase} done: {d['succeeded']} ok, {given_up} given up in {d['duration_s']:.1f} s"
                return done + self._estimate(d["phase"])
            case "call.failed":
                final = "gave up" if d["final"] else "will retry"
                where = f"{safe(d['phase'])}#{d['call']} attempt {d['attempt']}"
                return f"  {where} failed: {d['reason']} ({final}) {safe(d['excerpt'][:60])}"
            case "run.finished":
                return f"run finished: {d['outcome']} ({safe(d['reason'])}) {safe(d.get('detail', ''))}"
        return None

    def _estimate(self, phase: str) -> str:
        """Predicted against actual tokens of a finished phase, when it had a prediction."""
        progress = next((p for p in self.snapshot().phases if p.name == phase), None)
        if progress is None or progress.predicted_tokens is None:
            return ""
        actual, predicted = progress.used_tokens, progress.predicted_tokens
        return f"; tokens {actual:,} of {predicted:,} predicted (SMAPE {smape(predicted, actual):.1f} %)"

    def _progress(self) -> None:
        s = self.snapshot()
        done = s.calls_done
        bar_width = 24
        filled = int(bar_width * done / s.planned_calls) if s.planned_calls else 0
        bar = "#" * filled + "." * (bar_width - filled)
        line = (
            f"[{bar}] {done}/{s.planned_calls} {safe(s.current_phase or '-')} | ok {s.successful_calls} "
            f"failed attempts {s.failed_attempts} given up {s.calls_given_up} retries {s.retries} "
            f"in flight {s.in_flight} | tokens {s.total_tokens:,}"
        )
        if s.predicted_tokens:
            line += f" (predicted {s.predicted_tokens:,})"
        if s.finished_ts is not None:
            line += f" | {s.outcome}" + (f" after {s.elapsed_s:.1f} s" if s.elapsed_s is not None else "")
        elif s.elapsed_s is not None and self._heartbeat_seen is not None:
            # The worker's clock as of its last heartbeat, advanced by our own monotonic clock:
            # elapsed + left always equals the run's timeout.
            since = time.monotonic() - self._heartbeat_seen
            left = max(0.0, (s.remaining_s or 0.0) - since)
            line += f" | {s.elapsed_s + since:.0f} s, {left:.0f} s left"
        if line == self._last_line:
            return
        self._last_line = line
        if self.tty:
            self.out.write("\r\x1b[2K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def _print(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self.out.flush()
