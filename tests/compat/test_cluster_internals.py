"""What livestats relies on in redis-py's Cluster client, checked against a real Cluster (the
digests in test_library_internals.py say the source is unchanged; these say it still does what
the uses need)."""

from __future__ import annotations

import pytest
from livestats_gateway.compat import raw_stream_replies
from livestats_shared.cluster import cluster_of
from livestats_shared.compat import pipeline_evalsha
from livestats_shared.redis_client import connect
from redis.crc import key_slot
from redis.exceptions import MovedError


@pytest.fixture
async def cluster_client(redis_cluster):
    client = connect(redis_cluster.url, "livestats.tests.compat")
    try:
        yield client
    finally:
        await client.aclose()


def keys_on_every_primary(redis_cluster, prefix: str) -> list[str]:
    """One key per primary (found by trying names): the checks below must cross nodes."""
    found: dict[int, str] = {}
    for i in range(10_000):
        key = f"{prefix}:{i}"
        found.setdefault(redis_cluster.node_of_key(key).port, key)
        if len(found) == len(redis_cluster.primaries()):
            return list(found.values())
    raise AssertionError("no key found for some primary")


async def test_raw_stream_replies_set_on_a_cluster_client_reach_every_node(redis_cluster, cluster_client):
    streams = keys_on_every_primary(redis_cluster, "livestats:tests:compat:raw")
    for stream in streams:
        await cluster_client.xadd(stream, {"f": "v"})
    raw_stream_replies(cluster_client)
    for stream in streams:
        ((entry_id, fields),) = await cluster_client.xrange(stream)
        assert isinstance(entry_id, bytes) and fields == [b"f", b"v"]  # a flat list: not parsed


async def test_a_cluster_pipeline_routes_a_queued_evalsha_by_its_keys(redis_cluster, cluster_client):
    keys = keys_on_every_primary(redis_cluster, "livestats:tests:compat:eval")
    script = "return redis.call('SET', KEYS[1], ARGV[1])"
    sha = await cluster_client.script_load(script)  # to every primary
    async with cluster_client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipeline_evalsha(pipe, sha, [key], [key.upper()])
        assert await pipe.execute() == [b"OK"] * len(keys)
    for key in keys:
        assert await cluster_client.get(key) == key.upper().encode()


async def test_a_node_client_raises_moved_as_a_typed_error_naming_the_owner(redis_cluster, cluster_client):
    cluster = cluster_of(cluster_client)
    assert cluster is not None
    key = "livestats:tests:compat:moved"
    owner = redis_cluster.node_of_key(key)
    other = next(n for n in redis_cluster.primaries() if n is not owner)
    client = cluster.dedicated_client(("127.0.0.1", other.port), "livestats.tests.compat")
    try:
        with pytest.raises(MovedError) as moved:
            await client.xread({key: "0-0"}, block=10)
        assert (moved.value.host, moved.value.port, moved.value.slot_id) == (
            "127.0.0.1",
            owner.port,
            key_slot(key.encode()),
        )
    finally:
        await client.aclose()
