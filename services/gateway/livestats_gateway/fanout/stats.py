"""The fan-out's counters, with one owner: metrics.py creates a FanoutStats, hands it to the hub,
the joins and the client sessions, and exports it when Prometheus scrapes.

The hot paths only bump plain integers here (a method call per read batch, per join or per
closed client, never per event or per subscriber); the observers are the metrics side's
histograms, observed once per batch or per join.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

# Why a client got a `reset` frame (docs/api.md, "Continuity"); exported one series each.
RESET_REASONS = ("trimmed", "unknown_since", "stream_reset", "gap")


class Observer(Protocol):
    """A histogram (prometheus_client's Histogram has this shape)."""

    def observe(self, amount: float) -> None: ...


class Accumulator(Protocol):
    """A counter (prometheus_client's Counter has this shape)."""

    def inc(self, amount: float = 1) -> None: ...


class _Ignored:
    """For a hub built without metrics (unit tests, benchmarks of the hub alone)."""

    def observe(self, amount: float) -> None:
        del amount

    def inc(self, amount: float = 1) -> None:
        del amount


class FanoutStats:
    """What the reader read, what clients were sent, and who fell behind."""

    def __init__(
        self,
        delivery_lag: Observer | None = None,
        replay_events: Observer | None = None,
        replay_bytes: Accumulator | None = None,
    ) -> None:
        self._delivery_lag = delivery_lag or _Ignored()
        self._replay_events = replay_events or _Ignored()
        self._replay_bytes = replay_bytes or _Ignored()
        # the reader
        self.reads = 0  # blocking XREADs completed
        self.redirects = 0  # Cluster MOVED/ASK answers the reader followed (a slot resharded)
        self.events_read = 0
        self.invalid_entries = 0  # entries that are not livestats events, skipped (live and replay)
        self.stream_breaks = 0  # continuity breaks the reader saw (one per stream, whatever its viewers)
        self.reader_lag_s = 0.0  # at the last read: now minus the newest event's timestamp
        # the clients
        self.resets_sent: Counter[str] = Counter()  # reset frames sent, by reason
        self.events_replayed = 0  # history events queued to joining clients
        self.replays_waiting = 0  # replays paused now until their client takes its queue
        self.slow_disconnects = 0  # clients closed for falling behind (4008)
        # Per-client counts of clients that have left; open ones are summed at scrape time.
        self.frames_sent_closed: Counter[str] = Counter()
        self.live_events_closed = 0

    # -- the reader ----------------------------------------------------------------------------

    def read(self) -> None:
        """One blocking XREAD completed (its entries are counted per stream in events_read)."""
        self.reads += 1

    def redirect(self) -> None:
        """The reader followed a MOVED or ASK answer to another node."""
        self.redirects += 1

    def lag(self, delivery_s: float | None, reader_s: float | None) -> None:
        """Once per read batch: the oldest event's age (delivery lag), the newest one's (reader lag)."""
        if delivery_s is not None:
            self._delivery_lag.observe(delivery_s)
        if reader_s is not None:
            self.reader_lag_s = reader_s

    def invalid(self, entries: int = 1) -> None:
        self.invalid_entries += entries

    def stream_break(self) -> None:
        self.stream_breaks += 1

    # -- the clients ---------------------------------------------------------------------------

    def reset(self, reason: str, clients: int = 1) -> None:
        self.resets_sent[reason] += clients

    def replayed(self, events: int, json_bytes: int) -> None:
        """Once per join: how much history it sent."""
        self.events_replayed += events
        self._replay_events.observe(events)
        self._replay_bytes.inc(json_bytes)

    def replay_waiting(self, change: int) -> None:
        """+1 when a replay pauses for its client to take its queue, -1 when it goes on."""
        self.replays_waiting += change

    def slow_disconnect(self) -> None:
        self.slow_disconnects += 1

    def client_left(self, transport: str, frames_sent: int, live_events: int) -> None:
        self.frames_sent_closed[transport] += frames_sent
        self.live_events_closed += live_events
