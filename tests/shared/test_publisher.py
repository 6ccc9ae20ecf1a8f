"""The publisher against a real server: atomic seq + stats, guards, outages, threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from livestats_shared import keys
from livestats_shared.errors import InvalidRunId, OutboxFull, PublishError, RunStateConflict
from livestats_shared.events import (
    CallFailed,
    CallRetrying,
    CallStarted,
    CallSucceeded,
    FailureReason,
    Heartbeat,
    PhasePlan,
    RunQueued,
    RunStarted,
    TokenUsage,
)
from livestats_shared.history import read_events, read_snapshot, read_stats_hash
from livestats_shared.ids import new_run_id
from livestats_shared.publish import NO_RUN, Publisher, SyncPublisher
from livestats_shared.publish.chunks import Chunk
from livestats_shared.publish.outbox import PendingEvent
from livestats_shared.publish.publisher import SCRIPT
from livestats_shared.redis_client import connect
from livestats_shared.stats import PRODUCER_PREFIX, delta_for, fold
from redis.exceptions import ResponseError


def queued(calls: int = 10) -> RunQueued:
    return RunQueued(name="t", planned_calls=calls, phases=[PhasePlan(name="gen", calls=calls)], timeout_s=60)


def started() -> RunStarted:
    return RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=3)


def call_cycle(i: int, fail: bool) -> list:
    started = CallStarted(phase="gen", call=i, attempt=1, predicted_tokens=50)
    if fail:
        return [
            started,
            CallFailed(phase="gen", call=i, attempt=1, reason=FailureReason.TOO_SMALL, duration_s=0.1, final=False),
            CallRetrying(phase="gen", call=i, attempt=2, reason=FailureReason.TOO_SMALL, delay_s=0.1),
        ]
    usage = TokenUsage(input_tokens=i, output_tokens=2 * i)
    return [started, CallSucceeded(phase="gen", call=i, attempt=1, duration_s=0.1, bytes=381, usage=usage)]


def without_bookkeeping(h: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in h.items() if not k.startswith(PRODUCER_PREFIX)}


async def test_events_are_ordered_contiguous_and_the_hash_equals_the_fold_of_the_stream(redis, publisher):
    run_id = new_run_id()
    publisher.emit(run_id, queued())
    publisher.emit(run_id, started())
    for i in range(200):
        for ev in call_cycle(i, fail=i % 7 == 0):
            publisher.emit(run_id, ev)
    assert await publisher.flush(5)

    events = await read_events(redis, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert without_bookkeeping(await read_stats_hash(redis, run_id)) == fold(events)
    snap = await read_snapshot(redis, run_id)
    assert snap is not None
    assert (snap.retries, snap.failed_attempts, snap.in_flight, snap.successful_calls) == (29, 29, 0, 171)


async def test_runs_interleaved_from_many_tasks_each_get_their_own_contiguous_seq(redis, publisher):
    runs = [new_run_id() for _ in range(20)]

    async def produce(run_id: str) -> None:
        publisher.emit(run_id, queued())
        publisher.emit(run_id, started())
        for _ in range(100):
            publisher.emit(run_id, Heartbeat(elapsed_s=1, remaining_s=2, in_flight=0, pids=[]))
            await asyncio.sleep(0)

    await asyncio.gather(*(produce(r) for r in runs))
    assert await publisher.flush(5)
    for run_id in runs:
        assert [e.seq for e in await read_events(redis, run_id)] == list(range(1, 103))


async def test_a_guard_lets_exactly_one_of_two_racing_transitions_through(redis, publisher):
    run_id = new_run_id()
    first = await publisher.publish(run_id, queued(), guard=(NO_RUN,))
    assert first.seq == 1
    with pytest.raises(RunStateConflict, match="queued"):
        await publisher.publish(run_id, queued(), guard=(NO_RUN,))
    results = await asyncio.gather(
        publisher.publish(run_id, started(), guard=("queued",)),
        publisher.publish(run_id, started(), guard=("queued",)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Published", "RunStateConflict"]
    assert len(await read_events(redis, run_id)) == 2


async def test_a_resent_chunk_is_recognised_and_not_written_twice(redis, publisher):
    """After a connection error the drain task resends its chunks unchanged; the script must
    skip those it already applied (producer sequence), or an outage would double events."""
    run_id = new_run_id()
    await publisher.publish(run_id, queued())
    await publisher.publish(run_id, started())
    beat = Heartbeat(elapsed_s=0, remaining_s=1, in_flight=0, pids=[])
    items = [
        PendingEvent(run_id, beat.TYPE, 1, beat.model_dump_json().encode(), delta_for(beat, 1), pseq=p)
        for p in (1000, 1001)
    ]
    run_keys = [keys.run_events(run_id), keys.run_stats(run_id), keys.run_lifecycle(run_id)]
    args = [*run_keys, "resender", 1000, 60, run_id, 1]
    first = await redis.eval(SCRIPT, 3, *args, *Chunk(run_id, items).script_args())
    again = await redis.eval(SCRIPT, 3, *args, *Chunk(run_id, items).script_args())
    assert (first[0], first[1]) == (1, 3) and again[0] == 0
    assert [e.seq for e in await read_events(redis, run_id)] == [1, 2, 3, 4]
    overlapping = [*items[1:], PendingEvent(run_id, beat.TYPE, 1, b"{}", delta_for(beat, 1), pseq=1002)]
    with pytest.raises(ResponseError, match="overlaps"):
        await redis.eval(SCRIPT, 3, *args, *Chunk(run_id, overlapping).script_args())


async def test_invalid_run_ids_are_refused_before_any_redis_command():
    # A client pointing at a closed port: any command would fail with ConnectionError.
    dead = connect("redis://127.0.0.1:9/0", "livestats.tests")
    pub = await Publisher(dead).start()
    try:
        for bad in ("a:b", "{x}", "*", "x" * 100):
            with pytest.raises(InvalidRunId):
                pub.emit(bad, queued())
            with pytest.raises(InvalidRunId):
                await pub.publish(bad, queued())
        assert len(pub.outbox) == 0
    finally:
        await pub.close(0)
        await dead.aclose()


async def test_the_server_stopped_and_restarted_mid_stream_loses_nothing(redis_server, redis_url):
    server = redis_server.require_control()
    client = connect(redis_url, "livestats.tests")
    pub = await Publisher(client).start()
    run_id = new_run_id()
    try:
        pub.emit(run_id, queued())
        pub.emit(run_id, started())
        for i in range(300):
            for ev in call_cycle(i, fail=False):
                pub.emit(run_id, ev)
            if i == 100:
                await pub.flush(5)
                await asyncio.to_thread(server.stop)
            if i == 200:
                assert len(pub.outbox) > 0  # buffered while the server is away
                server.start()  # from this thread: the server dies with the thread that started it
            await asyncio.sleep(0.001)
        assert await pub.flush(15), f"{len(pub.outbox)} events still buffered"
        assert pub.outages >= 1
    finally:
        await pub.close(0)
    events = await read_events(client, run_id)
    assert [e.seq for e in events] == list(range(1, 603))
    assert without_bookkeeping(await read_stats_hash(client, run_id)) == fold(events)
    await client.aclose()


async def test_an_awaited_publish_fails_loudly_when_redis_stays_away(redis_server, redis_url):
    server = redis_server.require_control()
    client = connect(redis_url, "livestats.tests")
    pub = await Publisher(client).start()
    try:
        await asyncio.to_thread(server.stop)
        with pytest.raises(PublishError, match="may not have been written"):
            await pub.publish(new_run_id(), queued(), timeout_s=0.5)
        assert len(pub.outbox) == 0
    finally:
        server.start()  # from this thread: the server dies with the thread that started it
        await pub.close(1)
        await client.aclose()


async def test_a_full_outbox_refuses_loudly_instead_of_dropping(redis_server, redis_url):
    server = redis_server.require_control()
    client = connect(redis_url, "livestats.tests")
    pub = await Publisher(client, capacity=50).start()
    run_id = new_run_id()
    await pub.publish(run_id, queued())
    await pub.publish(run_id, started())
    try:
        await asyncio.to_thread(server.stop)
        for _ in range(50):
            pub.emit(run_id, Heartbeat(elapsed_s=0, remaining_s=0, in_flight=0, pids=[]))
        with pytest.raises(OutboxFull, match="outbox full"):
            pub.emit(run_id, Heartbeat(elapsed_s=0, remaining_s=0, in_flight=0, pids=[]))
        assert pub.outbox.refused == 1
        server.start()  # from this thread: the server dies with the thread that started it
        assert await pub.flush(10)
    finally:
        await pub.close(1)
    assert len(await read_events(client, run_id)) == 52
    await client.aclose()


def test_the_sync_facade_works_from_many_threads_at_once(redis_url):
    run_id = new_run_id()
    errors: list[BaseException] = []
    with SyncPublisher(redis_url) as pub:
        pub.publish(run_id, queued(), guard=(NO_RUN,))
        pub.publish(run_id, started(), guard=("queued",))

        def worker(t: int) -> None:
            try:
                for i in range(50):
                    pub.emit(run_id, CallStarted(phase="gen", call=t * 100 + i, attempt=1))
                    pub.publish(run_id, CallSucceeded(phase="gen", call=t * 100 + i, attempt=1, duration_s=0, bytes=1))
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert pub.flush(5)

    assert errors == []

    async def check() -> None:
        client = connect(redis_url, "livestats.tests")
        events = await read_events(client, run_id)
        await client.aclose()
        assert [e.seq for e in events] == list(range(1, 803))
        snap = fold(events)
        assert snap["successful_calls"] == "400" and snap["in_flight"] == "0"

    asyncio.run(check())


async def test_run_keys_expire_after_the_terminal_event(redis, publisher):
    from livestats_shared.events import Outcome, RunFinished

    run_id = new_run_id()
    publisher.emit(run_id, queued())
    await publisher.publish(run_id, RunFinished(outcome=Outcome.SUCCEEDED, reason="completed"))
    ttl = await redis.ttl(keys.run_events(run_id))
    assert 0 < ttl <= keys.RUN_RETENTION_S
    assert await redis.ttl(keys.run_stats(run_id)) > 0
    feed = await redis.xrevrange(keys.RUNS_FEED, count=50)
    mine = [f for _, f in feed if f[b"run_id"] == run_id.encode()]
    assert [f[b"status"] for f in mine] == [b"succeeded", b"queued"]
    assert await redis.zscore(keys.RUNS_INDEX, run_id) is not None


async def test_a_write_redis_refuses_fails_loudly_and_other_runs_keep_flowing(redis, publisher, caplog):
    poisoned, healthy = new_run_id(), new_run_id()
    await redis.set(keys.run_stats(poisoned), "not a hash")  # every write to this run fails: WRONGTYPE
    publisher.emit(poisoned, queued())
    publisher.emit(healthy, queued())
    with pytest.raises(PublishError, match="WRONGTYPE"):
        await publisher.publish(poisoned, queued())
    await publisher.publish(healthy, started())
    assert [e.seq for e in await read_events(redis, healthy)] == [1, 2]
    assert publisher.failed == 2
    assert any("not written" in r.getMessage() and poisoned in r.getMessage() for r in caplog.records)


async def test_a_closed_publisher_refuses_new_events(redis):
    pub = await Publisher(redis).start()
    await pub.close()
    with pytest.raises(PublishError, match="not running"):
        pub.emit(new_run_id(), queued())
