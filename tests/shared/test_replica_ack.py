"""Replica acknowledgement (LIVESTATS_PUBLISH_REPLICAS): a write too few replicas hold is not
acknowledged to its producer; it is resent until they do, and lands exactly once."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from helpers import wait_until
from livestats_shared import keys
from livestats_shared.events import PhasePlan, RunQueued, RunStarted
from livestats_shared.history import read_events, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.publish.chunks import Chunk
from livestats_shared.publish.metrics import PublisherCollector
from livestats_shared.publish.outbox import PendingEvent
from livestats_shared.publish.publisher import SCRIPT
from livestats_shared.publish.replicas import ReplicaAck
from livestats_shared.redis_client import connect
from livestats_shared.stats import PRODUCER_PREFIX, delta_for, fold
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.sentinel

QUEUED = RunQueued(name="ack", planned_calls=1, phases=[PhasePlan(name="p", calls=1)], timeout_s=60)
STARTED = RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0)


class Frozen:
    """SIGSTOP a server: connected, but it reads and acknowledges nothing until thawed."""

    def __init__(self, proc) -> None:
        self.proc = proc

    def __enter__(self) -> Frozen:
        self.proc.send_signal(signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGCONT)


async def test_a_write_no_replica_acknowledged_is_resent_until_one_does_and_lands_once(sentinel_set):
    client = connect(sentinel_set.url, "livestats.tests.ack")
    publisher = await Publisher(client, replica_ack=ReplicaAck(replicas=1, timeout_ms=50)).start()
    registry = CollectorRegistry()
    registry.register(PublisherCollector(publisher))
    try:
        run_id = new_run_id()
        await publisher.publish(run_id, QUEUED)  # acknowledged at once: the replica is up
        assert publisher.acks.unreplicated_chunks == 0
        with Frozen(sentinel_set.nodes[sentinel_set.replica_port].proc):
            pending = asyncio.create_task(publisher.publish(run_id, STARTED, timeout_s=120))
            await wait_until(lambda: publisher.acks.unreplicated_chunks >= 3, timeout_s=30)  # resent twice
            assert not pending.done()  # written on the primary, but not acknowledged to the producer
            assert [e.type for e in await read_events(client, run_id)] == ["run.queued", "run.started"]
        written = await asyncio.wait_for(pending, 60)
        events = await read_events(client, run_id)
        assert [e.seq for e in events] == [1, 2]  # resent, yet written once
        # The producer gets the first write's seq and id, not the "already written" answer's.
        assert (written.seq, written.id) == (2, events[1].id)
        h = await read_stats_hash(client, run_id)
        assert {k: v for k, v in h.items() if not k.startswith(PRODUCER_PREFIX)} == fold(events)
        assert registry.get_sample_value("livestats_publish_unreplicated_chunks_total") == float(
            publisher.acks.unreplicated_chunks
        )
    finally:
        await publisher.close()
        await client.aclose()


async def test_a_resend_found_already_written_still_waits_for_the_replicas_on_another_connection(sentinel_set):
    # The pool may give a resend another connection than the first write's. WAIT only covers
    # what its own connection wrote, so the script rewrites the producer's mark when it finds
    # a chunk already written: that write is what the resend's WAIT then waits for.
    clients: list[Any] = [connect(sentinel_set.url, f"livestats.tests.{n}", single_connection=True) for n in "abc"]
    first, resend, idle = clients
    try:
        run_id = new_run_id()
        item = PendingEvent(run_id, QUEUED.TYPE, 1, QUEUED.model_dump_json().encode(), delta_for(QUEUED, 1), pseq=1)
        args: list[Any] = [
            keys.run_events(run_id),
            keys.run_stats(run_id),
            keys.run_lifecycle(run_id),
            "p",
            1000,
            60,
            run_id,
            1,
        ]
        with Frozen(sentinel_set.nodes[sentinel_set.replica_port].proc):
            assert (await first.eval(SCRIPT, 3, *args, *Chunk(run_id, [item]).script_args()))[0] == 1
            assert await first.wait(1, 50) == 0  # the replica does not have it
            assert await idle.wait(1, 50) == 1  # positive control: a connection that wrote nothing is "done"
            assert (await resend.eval(SCRIPT, 3, *args, *Chunk(run_id, [item]).script_args()))[0] == 0
            assert await resend.wait(1, 50) == 0  # not acknowledged while the replica lacks the write
        assert await resend.wait(1, 10_000) == 1
    finally:
        for c in clients:
            await c.aclose()
