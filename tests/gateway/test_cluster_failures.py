"""The gateway on a Redis Cluster while it changes under a live run: a reshard of the run's slot,
and its primary killed (a replica promoted). Clients stay exact throughout; what a promoted
replica lacks is reported by a `reset`, never skipped silently."""

from __future__ import annotations

import asyncio

import pytest
from helpers import wait_for_event, wait_until
from livestats_shared import keys
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from livestats_shared.stats import PRODUCER_PREFIX, fold
from redis.crc import key_slot
from ws_client import RunWatcher, beat, open_run, publish_run

pytestmark = pytest.mark.slow  # a cluster of its own, a failover

# Short blocks: a read parked on a node that no longer has the stream (mid-migration) asks again
# soon, instead of after the default 5 s.
READ_BLOCK_MS = 200


async def assert_stream_is_whole_and_folds_to_its_snapshot(redis, run_id: str) -> list:
    events = await read_events(redis, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stats = await read_stats_hash(redis, run_id)
    assert {k: v for k, v in stats.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)
    return events


async def test_a_live_runs_slot_resharded_mid_run_reaches_every_client_once(redis_cluster, start_gateway, redis_url):
    # arq's queue cannot be on a Cluster: it stays on the session's single server (redis_url).
    gateway = start_gateway(redis_url=redis_cluster.url, queue_redis_url=redis_url, read_block_ms=READ_BLOCK_MS)
    redis = connect(redis_cluster.url, "livestats.tests")
    publisher = await Publisher(redis).start()
    try:
        run_id, n = new_run_id(), 3_000
        slot = key_slot(keys.run_events(run_id).encode())
        producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=20, tick_s=0.01))
        watchers = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(4)]
        await wait_for_event(redis, run_id, "run.queued", 30)  # a socket for no run yet is closed 4404
        following = [asyncio.create_task(w.follow(n, timeout_s=120)) for w in watchers]

        async def events_flow() -> None:
            """Each watcher gets more events (the step in between did not stop them)."""
            marks = [w.last_seq for w in watchers]
            await wait_until(lambda: all(w.last_seq > m for w, m in zip(watchers, marks, strict=True)), 60)

        await events_flow()
        source = redis_cluster.primary_of(slot)
        target = next(node for node in redis_cluster.primaries() if node is not source)
        await asyncio.to_thread(redis_cluster.begin_migration, slot, target)
        await events_flow()  # written on the source, which still holds the run's keys
        assert await asyncio.to_thread(redis_cluster.move_keys, slot, source, target) >= 3
        await events_flow()  # now on the target, reached with ASK by the publisher and the reader
        late = RunWatcher(gateway.ws, run_id, headers=gateway.headers)  # its history comes by ASK
        following.append(asyncio.create_task(late.follow(n, timeout_s=120)))
        await asyncio.to_thread(redis_cluster.finish_migration, slot, source, target)
        await asyncio.gather(producer, *following)

        for w in [*watchers, late]:
            assert w.seqs == list(range(1, n + 1))
            assert not [c for c in w.controls if c["type"] == "reset"]
        assert redis_cluster.node_of_key(keys.run_events(run_id)) is target
        assert gateway.app_state["hub"].stats.redirects >= 1  # it did follow the slot
        events = await assert_stream_is_whole_and_folds_to_its_snapshot(redis, run_id)
        assert len(events) == n
    finally:
        await publisher.close()
        await redis.aclose()


@pytest.mark.timeout(180)
async def test_a_killed_primary_loses_only_what_its_replica_lacked_and_clients_get_a_reset_for_it(
    fresh_cluster, start_gateway, redis_url
):
    gateway = start_gateway(redis_url=fresh_cluster.url, queue_redis_url=redis_url, read_block_ms=READ_BLOCK_MS)
    redis = connect(fresh_cluster.url, "livestats.tests")
    publisher = await Publisher(redis).start()
    try:
        run_id = new_run_id()
        slot = key_slot(keys.run_events(run_id).encode())
        await open_run(publisher, run_id)
        for _ in range(50):
            publisher.emit(run_id, beat())
        assert await publisher.flush(10)
        watchers = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(3)]
        following = [asyncio.create_task(w.follow(10**9, timeout_s=150)) for w in watchers]
        await wait_until(lambda: all(w.last_seq == 52 for w in watchers), 30)

        # Beats 53-72 reach the primary only (the replica is cut off), and every client.
        primary = fresh_cluster.primary_of(slot)
        replica = await asyncio.to_thread(fresh_cluster.cut_replication, primary)
        for _ in range(20):
            publisher.emit(run_id, beat())
        assert await publisher.flush(10)
        await wait_until(lambda: all(w.last_seq == 72 for w in watchers), 30)
        resumer = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
        await resumer.session(until_seq=72)  # then away: it comes back with since = beat 72's id
        await asyncio.to_thread(fresh_cluster.kill, primary)
        fresh_cluster.resume(replica)
        assert await asyncio.to_thread(fresh_cluster.wait_promoted, slot, primary) is replica

        # The run goes on on the promoted replica, which has beats up to 52 only.
        for _ in range(30):
            publisher.emit(run_id, beat())
        assert await publisher.flush(60)
        events = await assert_stream_is_whole_and_folds_to_its_snapshot(redis, run_id)
        last = events[-1].seq
        assert last == 52 + 30  # the 20 beats the replica lacked are gone (no replica acks asked)

        for w in watchers:
            await wait_until(lambda w=w: w.last_seq == last and not w.restart, 60)
            resets = [c for c in w.controls if c["type"] == "reset"]
            # Sent as the reader reconnects (next_seq null: nothing follows yet), or at the next event when
            # the new primary's entries already sort past what was delivered (next_seq 53).
            assert [(r["reason"], r["expected_seq"]) for r in resets] == [("stream_reset", 73)]
            assert resets[0]["next_seq"] in (None, 53)
            assert resets[0]["snapshot"]["seq"] >= 52  # the run as the promoted replica has it (at least)
            assert w.seqs == list(range(53, last + 1))  # after the reset: the stream as it is now
        await resumer.session(until_seq=last)
        assert [c["type"] for c in resumer.controls].count("reset") == 1  # its `since` is gone
        assert resumer.seqs == list(range(1, last + 1))  # replayed whole after the reset
        joiner = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
        await joiner.session(until_seq=last)
        assert joiner.seqs == list(range(1, last + 1)) and not [c for c in joiner.controls if c["type"] == "reset"]
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
    finally:
        await publisher.close()
        await redis.aclose()
