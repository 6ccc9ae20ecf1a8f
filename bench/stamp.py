"""The publisher's clock, carried in an event so a client can time it end to end.

The contract caps `call.started.pid` at 2^31-1, so the stamp is the publisher's wall clock in
microseconds modulo that cap (plus one: a pid is >= 1). It wraps every ~35 minutes; any
latency shorter than that is recovered exactly, to the microsecond, by a client on the same
machine (same clock).
"""

from __future__ import annotations

import time

from livestats_shared.events import MAX_PID

WRAP = MAX_PID  # stamps are 1..MAX_PID


def stamp(now_ns: int | None = None) -> int:
    """The `pid` value that says "sent now"."""
    us = (time.time_ns() if now_ns is None else now_ns) // 1_000
    return us % WRAP + 1


def latency_ns(pid: int, now_ns: int) -> int:
    """How long ago (ns, µs resolution) the event stamped `pid` was sent, as of `now_ns`."""
    return (now_ns // 1_000 - (pid - 1)) % WRAP * 1_000
