"""A Sentinel-managed primary killed mid-run (SIGKILL): what producers and WebSocket clients get.

With replica acknowledgement on, no event acknowledged to its producer is lost and none is
written twice. With it off, events the promoted replica never received are lost, and every
client that had them is told with a `reset`: never a silent gap
(docs/deploy.md, "Sentinel: a primary that fails over, and replica acknowledgement").
"""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest
from helpers import wait_until
from livestats_shared.events import CallStarted, CallSucceeded, Outcome, RunFinished
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.publish import publisher as publisher_module
from livestats_shared.publish.replicas import ReplicaAck
from livestats_shared.redis_client import connect
from livestats_shared.stats import PRODUCER_PREFIX, RunSnapshot, fold
from websockets.exceptions import ConnectionClosed
from ws_client import RunWatcher, beat, open_run

pytestmark = pytest.mark.sentinel

CALLS = 300


def call(n: int) -> list:
    return [
        CallStarted(phase="p", call=n, attempt=1),
        CallSucceeded(phase="p", call=n, attempt=1, duration_s=0.1, bytes=10),
    ]


FINISHED = RunFinished(outcome=Outcome.SUCCEEDED, reason="completed")


async def follow(watcher: RunWatcher, until_seq: int, *, flaky: bool = False) -> RunWatcher:
    """Read until `until_seq`, reconnecting with `since` whenever the socket ends, as a UI does
    (1013 while the gateway cannot reach Redis). `flaky`: also drop the socket now and then."""
    async with asyncio.timeout(240):
        while watcher.last_seq < until_seq:
            try:
                frames = random.randint(5, 40) if flaky else None
                await watcher.session(until_seq=until_seq, max_frames=frames, timeout_s=240)
            except (OSError, ConnectionClosed):
                await asyncio.sleep(0.05)  # refused or dropped: reconnect after a client's backoff
                continue
            if watcher.last_seq < until_seq:
                await asyncio.sleep(0.05)  # closed (1013 while Redis is away): the same
    return watcher


def assert_exact(watcher: RunWatcher, run_id: str, events: list) -> None:
    """The client holds exactly the run's final stream: every event (seq and id), or after its
    last `reset` that reset's snapshot plus every event past the snapshot's seq."""
    stream = [(e.seq, e.id) for e in events]
    held = list(zip(watcher.seqs, watcher.ids[len(watcher.ids) - len(watcher.seqs) :], strict=True))
    resets = [c for c in watcher.controls if c["type"] == "reset"]
    if not resets:
        assert held == stream
        return
    snapshot = resets[-1]["snapshot"]
    upto = snapshot["seq"]
    assert snapshot == RunSnapshot.from_hash(run_id, fold(events[:upto])).model_dump(mode="json")
    assert [h for h in held if h[0] > upto] == stream[upto:]


async def assert_snapshot_is_the_fold(client, run_id: str, events: list) -> None:
    h = await read_stats_hash(client, run_id)
    assert {k: v for k, v in h.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)


@pytest.mark.timeout(300)
async def test_with_replica_acknowledgement_a_killed_primary_loses_no_acknowledged_event(sentinel_set, start_gateway):
    gateway = start_gateway(redis_url=sentinel_set.url)
    client = connect(sentinel_set.url, "livestats.tests.failover")
    publisher = await Publisher(client, replica_ack=ReplicaAck(replicas=1, timeout_ms=200)).start()
    try:
        run_id, total = new_run_id(), 2 + 2 * CALLS + 1
        await open_run(publisher, run_id, calls=CALLS)
        watchers = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(3)]
        readers = [asyncio.create_task(follow(watchers[0], total))]  # live throughout
        readers.append(asyncio.create_task(follow(watchers[1], total, flaky=True)))  # resumes again and again

        acknowledged = []
        halfway = asyncio.Event()

        async def produce() -> None:
            for n in range(CALLS):
                acknowledged.append(await publisher.publish_all(run_id, call(n), timeout_s=180))
                if n == CALLS // 3:
                    halfway.set()

        producing = asyncio.create_task(produce())
        await halfway.wait()
        old = sentinel_set.kill_primary()  # the producer goes on publishing meanwhile
        readers.append(asyncio.create_task(follow(watchers[2], total)))  # joins while there is no primary
        await sentinel_set.promoted(old)
        await sentinel_set.revive_as_replica(old)  # acknowledgement needs a replica again
        await producing
        acknowledged.append(await publisher.publish_all(run_id, [FINISHED], timeout_s=180))
        await asyncio.gather(*readers)

        events = await read_events(client, run_id)
        assert [e.seq for e in events] == list(range(1, total + 1))  # every event exactly once, in order
        ids = {e.seq: e.id for e in events}
        assert all(ids[a.last_seq] == a.last_id for a in acknowledged)  # what the producer was told holds
        assert [e.type for e in events].count("call.succeeded") == CALLS
        await assert_snapshot_is_the_fold(client, run_id, events)
        for watcher in watchers:
            assert_exact(watcher, run_id, events)
        assert publisher.outages >= 1  # the kill was seen: a positive control
    finally:
        await publisher.close()
        await client.aclose()


@pytest.mark.timeout(300)
async def test_without_acknowledgement_events_lost_in_a_failover_reach_every_client_as_a_reset(
    sentinel_set, start_gateway, monkeypatch
):
    gateway = start_gateway(redis_url=sentinel_set.url)
    client = connect(sentinel_set.url, "livestats.tests.failover")
    publisher = await Publisher(client).start()  # acknowledged once the primary has it
    try:
        run_id, kept_calls, lost = new_run_id(), 20, 5
        await open_run(publisher, run_id, calls=CALLS)
        for n in range(kept_calls):
            await publisher.publish_all(run_id, call(n))
        kept = 2 + 2 * kept_calls
        await sentinel_set.replica_caught_up()
        # The replica lagging at the moment of the crash, made certain: the next events are
        # written by the publish script with replication switched off, so only the primary has them.
        unreplicated = "redis.set_repl(redis.REPL_NONE)\n" + publisher_module.SCRIPT
        monkeypatch.setattr(publisher_module, "SCRIPT", unreplicated)
        monkeypatch.setattr(publisher_module, "SCRIPT_SHA", hashlib.sha1(unreplicated.encode()).hexdigest())
        for _ in range(lost):
            await publisher.publish(run_id, beat())
        monkeypatch.undo()

        total = kept + 2 * (CALLS - kept_calls) + 1
        live = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(2)]
        readers = [asyncio.create_task(follow(w, total)) for w in live]
        await wait_until(lambda: all(w.last_seq == kept + lost for w in live), timeout_s=30)
        gone = RunWatcher(gateway.ws, run_id, headers=gateway.headers)  # had them all, then disconnected
        await gone.session(until_seq=kept + lost)

        old = sentinel_set.kill_primary()
        await sentinel_set.promoted(old)
        # Told at once, though nothing more is published: the stream now ends before what they had.
        await wait_until(lambda: all(any(c["type"] == "reset" for c in w.controls) for w in live), timeout_s=60)
        for w in live:
            (reset,) = [c for c in w.controls if c["type"] == "reset"]
            assert (reset["reason"], reset["expected_seq"], reset["snapshot"]["seq"]) == (
                "stream_reset",
                kept + lost + 1,
                kept,
            )
        resuming = asyncio.create_task(follow(gone, total))  # resumes from an id the stream lost

        for n in range(kept_calls, CALLS):
            await publisher.publish_all(run_id, call(n))
        await publisher.publish(run_id, FINISHED)
        await asyncio.gather(*readers, resuming)

        events = await read_events(client, run_id)
        assert [e.seq for e in events] == list(range(1, total + 1))
        assert "heartbeat" not in [e.type for e in events]  # the lost ones are gone, never resent
        await assert_snapshot_is_the_fold(client, run_id, events)
        for watcher in [*live, gone]:
            assert_exact(watcher, run_id, events)
        assert [c["reason"] for c in gone.controls if c["type"] == "reset"] == ["unknown_since"]
    finally:
        await publisher.close()
        await client.aclose()
