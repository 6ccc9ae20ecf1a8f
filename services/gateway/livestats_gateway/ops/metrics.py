"""Prometheus metrics of one gateway process, served unauthenticated at `GET /metrics`
(aggregates only: no run ids, users or messages in any label).

The fan-out's counters have one owner: `GatewayMetrics` creates the FanoutStats
(fanout/stats.py) that the hub, the joins and the client sessions bump; the hot paths only bump
plain integers there and on subscribers, and a collector turns them into samples when
Prometheus scrapes. Only the lag and replay histograms are observed as things happen: once per
read batch and once per join, never per event or per client. The `/metrics` route is in api.py.

Each gateway counts what it itself sent; stalled runs are counted by the gateway whose mark
won (the lease and the guarded write make that one gateway), so sums over gateways are exact.
A process of a multi-process gateway (supervise.py) is one such gateway: every sample it
exposes carries a constant `process` label (its index), so the series of sibling processes
scraped on their private ports stay apart and `sum without(process)` adds them up.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..fanout.stats import RESET_REASONS, FanoutStats

if TYPE_CHECKING:
    from ..fanout.hub import Hub
    from .stalls import StallMonitor

# Seconds from an event's creation (the producer's clock) to its hand-off to client queues.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REPLAY_EVENT_BUCKETS = (0, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
TRANSPORTS = ("ws", "sse")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """The gateway's registry: a few observed histograms plus a collector over the fan-out's
    counters (`fanout`, handed to the hub) and the stall monitor's."""

    def __init__(self, process: int | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self._exposed: Collector = r if process is None else _ProcessLabel(r, str(process))
        delivery_lag = Histogram(
            "livestats_gateway_delivery_lag_seconds",
            "Age of the oldest event of each live batch when it was handed to clients.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        replay_events = Histogram(
            "livestats_gateway_replay_events",
            "Events replayed from history per joining client (the count is replays served).",
            buckets=REPLAY_EVENT_BUCKETS,
            registry=r,
        )
        replay_bytes = Counter(
            "livestats_gateway_replay_bytes", "Bytes of event JSON replayed to joining clients.", registry=r
        )
        self.fanout = FanoutStats(delivery_lag, replay_events, replay_bytes)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes (`CONTENT_TYPE`)."""
        return generate_latest(self._exposed)

    def watch(self, hub: Hub, stalls: StallMonitor) -> None:
        """Export the fan-out's and the stall monitor's counters (once both exist)."""
        self.registry.register(_HubCollector(hub, self.fanout, stalls))


class _ProcessLabel(Collector):
    """The registry's samples, each with `process="<index>"` added (prometheus_client has no
    registry-wide constant labels)."""

    def __init__(self, registry: CollectorRegistry, process: str) -> None:
        self.registry = registry
        self.process = process

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [s._replace(labels={**s.labels, "process": self.process}) for s in family.samples]
            yield labelled


class _HubCollector(Collector):
    def __init__(self, hub: Hub, stats: FanoutStats, stalls: StallMonitor) -> None:
        self.hub = hub
        self.stats = stats
        self.stalls = stalls

    def collect(self) -> Iterator[Metric]:
        yield from self._clients()
        yield from self._reader()
        yield from self._stalls()

    def _clients(self) -> Iterator[Metric]:
        stats = self.stats
        clients: Tally[str] = Tally({t: 0 for t in TRANSPORTS})
        frames: Tally[str] = Tally({t: 0 for t in TRANSPORTS})
        frames.update(stats.frames_sent_closed)
        live_events = stats.live_events_closed
        for sub in list(self.hub.connections):  # copied: scrapes run on the loop, but stay safe if not
            clients[sub.fmt.name] += 1
            frames[sub.fmt.name] += sub.frames_sent
            live_events += sub.events_queued
        yield _labelled(GaugeMetricFamily, "livestats_gateway_clients", "Open WebSocket and SSE clients.", clients)
        yield _labelled(CounterMetricFamily, "livestats_gateway_frames_sent", "Frames taken by client senders.", frames)
        sent = CounterMetricFamily(
            "livestats_gateway_events_sent",
            "Events queued to clients: live fan-out or history replay.",
            labels=["mode"],
        )
        sent.add_metric(["live"], live_events)
        sent.add_metric(["replay"], stats.events_replayed)
        yield sent
        resets = CounterMetricFamily(
            "livestats_gateway_resets_sent", "Reset frames sent, by reason.", labels=["reason"]
        )
        for reason in RESET_REASONS:
            resets.add_metric([reason], stats.resets_sent[reason])
        yield resets
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_replays_waiting",
            "History replays paused now until their client takes its send queue.",
            stats.replays_waiting,
        )
        yield _plain(
            CounterMetricFamily,
            "livestats_gateway_slow_client_disconnects",
            "Clients closed for falling behind their send queue (4008).",
            stats.slow_disconnects,
        )

    def _reader(self) -> Iterator[Metric]:
        stats, hub = self.stats, self.hub
        yield _plain(CounterMetricFamily, "livestats_gateway_reads", "Blocking XREADs completed.", stats.reads)
        yield _plain(
            CounterMetricFamily, "livestats_gateway_events_read", "Stream entries read live.", stats.events_read
        )
        yield _plain(
            CounterMetricFamily,
            "livestats_gateway_invalid_entries",
            "Stream entries skipped as not livestats events.",
            stats.invalid_entries,
        )
        yield _plain(
            GaugeMetricFamily, "livestats_gateway_streams", "Run streams read for clients now.", hub.channel_count
        )
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_read_groups",
            "Blocking reads in flight at once (1 on one server; a Cluster: watched hash slots).",
            hub.group_count,
        )
        yield _plain(
            CounterMetricFamily,
            "livestats_gateway_reader_redirects",
            "Cluster MOVED/ASK answers the reader followed (a slot was resharded).",
            stats.redirects,
        )
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_reader_lag_seconds",
            "At the last read: now minus the newest event's timestamp (producer clock).",
            stats.reader_lag_s,
        )
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_redis_up",
            "The reader reaches Redis (1) or not (0).",
            int(hub.connected),
        )

    def _stalls(self) -> Iterator[Metric]:
        yield _plain(
            CounterMetricFamily,
            "livestats_runs_stalled",
            "Runs this gateway marked stalled (heartbeats stopped).",
            self.stalls.stalled_marked,
        )
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_stall_leader",
            "This gateway holds the stall-scan lease (exactly one should).",
            int(self.stalls.leader),
        )


def _plain(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, value: float) -> Metric:
    return kind(name, doc, value=value)


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, values: Tally[str]
) -> Metric:
    family = kind(name, doc, labels=["transport"])
    for transport, value in sorted(values.items()):
        family.add_metric([transport], value)
    return family
