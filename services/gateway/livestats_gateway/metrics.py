"""Prometheus metrics of one gateway process, served unauthenticated at `GET /metrics`
(aggregates only: no run ids, users or messages in any label).

The hot paths (the reader, fan-out, each client's sender) only bump plain integers on the hub
and subscribers; a collector turns them into samples when Prometheus scrapes. Only the two lag
histograms and the replay histogram are observed as things happen: once per read batch and
once per join, never per event or per client.

Each gateway counts what it itself sent; stalled runs are counted by the gateway whose mark
won (the lease and the guarded write make that one gateway), so sums over gateways are exact.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .state import app_state

if TYPE_CHECKING:
    from .hub import Hub
    from .stalls import StallMonitor

# Seconds from an event's creation (the producer's clock) to its hand-off to client queues.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REPLAY_EVENT_BUCKETS = (0, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
TRANSPORTS = ("ws", "sse")

router = APIRouter()


class GatewayMetrics:
    """The gateway's registry: a few observed histograms plus a collector over the hub's counters."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.delivery_lag = Histogram(
            "livestats_gateway_delivery_lag_seconds",
            "Age of the oldest event of each live batch when it was handed to clients.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.replay_events = Histogram(
            "livestats_gateway_replay_events",
            "Events replayed from history per joining client (the count is replays served).",
            buckets=REPLAY_EVENT_BUCKETS,
            registry=r,
        )
        self.replay_bytes = Counter(
            "livestats_gateway_replay_bytes", "Bytes of event JSON replayed to joining clients.", registry=r
        )

    def watch(self, hub: Hub, stalls: StallMonitor) -> None:
        """Export the hub's and the stall monitor's counters (once both exist)."""
        self.registry.register(_HubCollector(hub, stalls))


class _HubCollector(Collector):
    def __init__(self, hub: Hub, stalls: StallMonitor) -> None:
        self.hub = hub
        self.stalls = stalls

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        clients: Tally[str] = Tally({t: 0 for t in TRANSPORTS})
        frames: Tally[str] = Tally({t: 0 for t in TRANSPORTS})
        frames.update(hub.frames_sent_closed)
        live_events = hub.live_events_closed
        for sub in list(hub.connections):  # copied: scrapes run on the loop, but stay safe if not
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
        sent.add_metric(["replay"], hub.events_replayed)
        yield sent
        resets = CounterMetricFamily(
            "livestats_gateway_resets_sent", "Reset frames sent, by reason.", labels=["reason"]
        )
        for reason in ("trimmed", "unknown_since", "stream_reset", "gap"):
            resets.add_metric([reason], hub.resets_sent[reason])
        yield resets
        yield _plain(
            CounterMetricFamily,
            "livestats_gateway_slow_client_disconnects",
            "Clients closed for falling behind their send queue (4008).",
            hub.slow_disconnects,
        )
        yield _plain(CounterMetricFamily, "livestats_gateway_reads", "Blocking XREADs completed.", hub.reads)
        yield _plain(CounterMetricFamily, "livestats_gateway_events_read", "Stream entries read live.", hub.events_read)
        yield _plain(
            CounterMetricFamily,
            "livestats_gateway_invalid_entries",
            "Stream entries skipped as not livestats events.",
            hub.invalid_entries,
        )
        yield _plain(
            GaugeMetricFamily, "livestats_gateway_streams", "Run streams read for clients now.", hub.channel_count
        )
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_reader_lag_seconds",
            "At the last read: now minus the newest event's timestamp (producer clock).",
            hub.reader_lag_s,
        )
        yield _plain(
            GaugeMetricFamily,
            "livestats_gateway_redis_up",
            "The reader reaches Redis (1) or not (0).",
            int(hub.connected),
        )
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


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition. Generated on the event loop, so counters are read consistently."""
    return Response(generate_latest(app_state(request)["metrics"].registry), media_type=CONTENT_TYPE_LATEST)
