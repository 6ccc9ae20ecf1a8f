"""Every use of redis-py's internals by the gateway, fenced in one place.

Policy as in `livestats_shared.compat` (docs/compat.md): `RELIED_ON` records a digest of each
internal as it is in the pinned redis-py (>=5.3.1,<6, verified on 5.3.1; checked at import by
the shared module), and tests/compat/ fails when an upgrade changes one of them.
"""

from __future__ import annotations

from typing import Any

from livestats_shared import compat as _shared_compat  # refuses arq/redis outside the pins
from redis.asyncio import Redis

PINNED_REDIS = _shared_compat.REDIS_VERIFIED

RELIED_ON = {
    # `raw_stream_replies`: a callback set for a command receives the reply exactly as the
    # RESP2 parser read it (the clients here never ask for RESP3, where XREAD is a map).
    "redis.asyncio.client.Redis.set_response_callback": "c260cd509fb0a281",
    "redis.asyncio.client.Redis.parse_response": "d66cfb53d08c4160",
    # ... and on a Cluster: RedisCluster.set_response_callback changes the one callbacks dict
    # every ClusterNode was given (not a copy), which each node applies to its replies.
    "redis.asyncio.cluster.ClusterNode.__init__": "4734fa80f6422425",
    "redis.asyncio.cluster.ClusterNode.parse_response": "3e3d87a5d815742b",
}

_RAW_COMMANDS = ("XRANGE", "XREVRANGE", "XREAD")


def raw_stream_replies(client: Redis) -> Redis:
    """Make `client` return stream entries as Redis sends them: [id, [field, value, ...]].
    redis-py's own parsing turns each entry into a dict in Python, which measured as half the
    cost of a replay (bench/results)."""
    for command in _RAW_COMMANDS:
        client.set_response_callback(command, _unparsed)
    return client


def _unparsed(response: Any, **options: Any) -> Any:
    return response
