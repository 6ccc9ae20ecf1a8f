"""One monotonic clock per run: elapsed time, the deadline and heartbeat ticks all read it,
so they cannot disagree (the old system mixed wall-clock heartbeats with monotonic elapsed)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RunClock:
    started_mono: float
    started_wall_ms: int
    timeout_s: float

    @classmethod
    def start(cls, timeout_s: float) -> RunClock:
        return cls(time.monotonic(), int(time.time() * 1000), timeout_s)

    @property
    def deadline_mono(self) -> float:
        return self.started_mono + self.timeout_s

    @property
    def deadline_wall_ms(self) -> int:
        return self.started_wall_ms + int(self.timeout_s * 1000)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_mono

    def remaining(self) -> float:
        return max(0.0, self.deadline_mono - time.monotonic())

    def tick(self, n: int, interval_s: float) -> float:
        """Monotonic time of the n-th heartbeat: fixed ticks, so delays do not accumulate."""
        return self.started_mono + n * interval_s
