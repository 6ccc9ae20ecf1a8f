"""`livestats-worker --check`: is the worker on this host able to do its job?

A container health check that only asks whether /metrics answers passes for a worker whose
Redis connection is dead (the exposition runs in its own thread) or whose event loop is stuck.
This reads what the worker itself last observed, from its own exposition:
- `livestats_worker_heartbeat_timestamp_seconds` is fresh: its event loop is ticking;
- `livestats_worker_redis_up` is 1: its last Redis command on arq's pool, at that tick, answered.
The check opens no Redis connection of its own: a check that can reach Redis says nothing
about whether the worker's connection can.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .config import WorkerConfig

_SCRAPE_TIMEOUT_S = 2.0
# The tick sets the heartbeat, then waits up to 2 s for Redis, then sleeps one interval: a
# heartbeat older than three intervals plus that wait means ticks were missed.
_MISSED_TICKS = 3
_TICK_SLACK_S = 2.0


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


def metrics_url(config: WorkerConfig) -> str:
    host = "127.0.0.1" if config.metrics_host in ("", "0.0.0.0", "::") else config.metrics_host
    return f"http://{host}:{config.metrics_port}/metrics"


def judge(samples: dict[str, float], heartbeat_interval_s: float, now: float) -> Health:
    """The verdict on one scrape's samples (name -> value)."""
    beat = samples.get("livestats_worker_heartbeat_timestamp_seconds")
    if beat is None or beat <= 0:
        return Health(False, "no heartbeat yet (the worker has not started its tick)")
    age = now - beat
    stale_after = _MISSED_TICKS * heartbeat_interval_s + _TICK_SLACK_S
    if age > stale_after:
        return Health(False, f"heartbeat is {age:.1f} s old (limit {stale_after:.1f} s): event loop stuck")
    if samples.get("livestats_worker_redis_up") != 1:
        return Health(False, "the worker's last Redis check failed (see its log)")
    return Health(True, f"heartbeat {age:.1f} s old, Redis answering")


def check(config: WorkerConfig) -> Health:
    if not config.metrics_port:
        return Health(False, "LIVESTATS_METRICS_PORT is not set: the check reads the worker's own /metrics")
    url = metrics_url(config)
    try:
        with urllib.request.urlopen(url, timeout=_SCRAPE_TIMEOUT_S) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return Health(False, f"{url} does not answer: {exc}")
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    return judge(samples, config.heartbeat_interval_s, time.time())
