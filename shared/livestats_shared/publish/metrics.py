"""The publisher's counters for Prometheus, read when scraped (the drain loop only bumps ints).

Registered by each process that publishes (worker, gateway) in its own registry.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .publisher import Publisher


class PublisherCollector(Collector):
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "livestats_publish_unreplicated_chunks",
            "Chunks written on the primary that too few replicas acknowledged in time; each was resent.",
            value=self.publisher.acks.unreplicated_chunks,
        )
