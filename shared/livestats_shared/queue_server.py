"""Where arq's queue lives: `LIVESTATS_QUEUE_REDIS_URL`, by default the telemetry server.

arq and the fair-share scheduler (sched/) use multi-key commands and scripts that build key
names at run time (the pending list of whichever principal's turn it is): neither can run on a
Cluster. So they may live on a server of their own, beside telemetry on a Cluster (docs/keys.md).
What lives there: arq's queue, job, result and abort keys, and every `keys.sched_*` key. All the
rest (streams, stats, run index and feed, auth, the layout record) is telemetry.
"""

from __future__ import annotations

QUEUE_URL_ENV = "LIVESTATS_QUEUE_REDIS_URL"
_CLUSTER_SCHEME = "redis+cluster://"


def resolve(telemetry_url: str, queue_url: str | None) -> str:
    """The queue server's URL: `queue_url`, else the telemetry URL. Raises ValueError for a
    configuration that cannot work: a Cluster for the queue, or a Cluster for telemetry with no
    queue server named."""
    if queue_url:
        if queue_url.startswith(_CLUSTER_SCHEME):
            raise ValueError(
                f"{QUEUE_URL_ENV} is a Cluster (redis+cluster://): arq's queue and the scheduler need one "
                "server (redis://, rediss:// or redis+sentinel://)"
            )
        return queue_url
    if telemetry_url.startswith(_CLUSTER_SCHEME):
        raise ValueError(
            f"the telemetry server is a Cluster (redis+cluster://) and {QUEUE_URL_ENV} is not set: arq's queue "
            f"and the scheduler cannot run on a Cluster; set {QUEUE_URL_ENV} to a single server for them"
        )
    return telemetry_url
