"""`redis+cluster://`: the URL, the client, and the cluster-safe paths against a real Cluster."""

from __future__ import annotations

import asyncio

import pytest
from livestats_cli.embedded import free_port
from livestats_shared import keys
from livestats_shared.closing import read_run
from livestats_shared.cluster import ClusterClient, atomically, cluster_of, parse_cluster_url
from livestats_shared.errors import InvalidRedisUrl
from livestats_shared.ids import new_run_id
from livestats_shared.redis_client import UNAVAILABLE, connect, redact_url
from redis.crc import key_slot
from ws_client import open_run


def test_a_cluster_url_names_every_startup_node_and_keeps_the_options():
    nodes, options = parse_cluster_url("redis+cluster://ops:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)]
    assert options == {"username": "ops", "password": "s3cret"}
    nodes, options = parse_cluster_url("rediss+cluster://a:7000,b:7001?ssl_cert_reqs=none")
    assert nodes == [("a", 7000), ("b", 7001)]
    assert options == {"ssl": True, "ssl_cert_reqs": "none"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://a:7000,b", "'b' is not host:port"),
        ("redis+cluster://a:7000,:7001", "':7001' is not host:port"),
        ("redis+cluster://a:7000/3", "only database 0"),
        ("redis+sentinel://a:26379/main", "not a Redis Cluster URL"),
    ],
)
def test_a_cluster_url_livestats_cannot_use_is_refused_with_what_is_wrong(url, message):
    with pytest.raises(InvalidRedisUrl, match=message):
        parse_cluster_url(url)


def test_the_password_of_a_cluster_url_is_masked_in_logs():
    assert redact_url("via redis+cluster://ops:s3cret@a:1,b:2 now") == "via redis+cluster://ops:***@a:1,b:2 now"


async def test_a_cluster_nobody_answers_is_an_outage_not_a_bug():
    # Positive control for every "Redis is away, retry" path: a Cluster mid-failover, or not up
    # yet, must raise what those paths catch (redis-py's own error there is not one of them).
    client = connect(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}", "livestats.tests")
    try:
        with pytest.raises(UNAVAILABLE):
            await client.get("anything")
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_the_cluster_variant_runs_against_a_cluster_and_a_run_lives_on_one_slot(redis, publisher, backend):
    # The [single]/[cluster] switch itself, checked: a [cluster] test really talks to a Cluster.
    assert (cluster_of(redis) is not None) == (backend == "cluster")
    run_id = new_run_id()
    await open_run(publisher, run_id)
    run_keys = [keys.run_events(run_id), keys.run_stats(run_id), keys.run_lifecycle(run_id), keys.run_cancel(run_id)]
    assert len({key_slot(k.encode()) for k in run_keys}) == 1
    stats, life = await read_run(redis, run_id)  # a MULTI/EXEC over two of them
    assert stats["status"] == "running" and life.epoch


async def test_a_transaction_follows_the_slot_after_a_migration(redis_cluster):
    client = connect(redis_cluster.url, "livestats.tests")
    try:
        cluster = cluster_of(client)
        assert isinstance(cluster, ClusterClient)
        run_id = new_run_id()
        stats, life = keys.run_stats(run_id), keys.run_lifecycle(run_id)
        await client.hset(stats, "status", "running")  # type: ignore[misc]
        await client.hset(life, "epoch", "3")  # type: ignore[misc]
        slot = key_slot(stats.encode())
        source = redis_cluster.primary_of(slot)
        target = next(n for n in redis_cluster.primaries() if n is not source)
        assert await cluster.owner(stats) == ("127.0.0.1", source.port)
        moved_before = _moved_errors(source)
        await asyncio.to_thread(redis_cluster.migrate_slot, slot, target)

        # The client's map still names the source: the transaction is answered MOVED there and
        # runs on the target instead.
        assert await cluster.owner(stats) == ("127.0.0.1", source.port)
        replies = await atomically(client, stats, lambda pipe: (pipe.hgetall(stats), pipe.hincrby(life, "epoch", 1)))
        assert replies == [{b"status": b"running"}, 4]
        assert _moved_errors(source) > moved_before  # positive control: it was redirected
        assert await cluster.slot_owner(slot) == ("127.0.0.1", target.port)
    finally:
        await client.aclose()


def _moved_errors(node) -> int:
    stats = node.client().info("errorstats")
    return int(stats.get("errorstat_MOVED", {}).get("count", 0))
