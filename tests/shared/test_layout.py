"""The key layout record: written on an empty database, checked on every other, and every way a
process must refuse a database (docs/keys.md)."""

from __future__ import annotations

import asyncio

import pytest
from layout_servers import fresh_server
from livestats_shared import keys, layout
from livestats_shared.events import RunQueued
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import UNAVAILABLE, connect


@pytest.fixture
async def empty(tmp_path):
    with fresh_server(tmp_path / "valkey") as server:
        client = connect(server.url, "livestats.tests")
        try:
            yield client
        finally:
            await client.aclose()


@pytest.fixture
def partitions(monkeypatch):
    """Set this process's LIVESTATS_PARTITIONS (read once per process: the cache is cleared)."""

    def use(count: int) -> None:
        monkeypatch.setenv(keys.PARTITIONS_ENV, str(count))
        keys.partitions.cache_clear()

    yield use
    monkeypatch.delenv(keys.PARTITIONS_ENV, raising=False)
    keys.partitions.cache_clear()


async def test_an_empty_database_gets_the_record_and_later_checks_pass(empty):
    first = await layout.ensure(empty)
    assert (first.version, first.partitions, first.created) == (2, 16, True)
    assert await empty.hgetall(keys.LAYOUT) == {b"version": b"2", b"partitions": b"16"}
    again = await layout.ensure(empty)
    assert (again.version, again.partitions, again.created) == (2, 16, False)


async def test_processes_starting_together_agree_on_one_record(empty):
    found = await asyncio.gather(*(layout.ensure(empty) for _ in range(10)))
    assert sum(f.created for f in found) >= 1
    assert {(f.version, f.partitions) for f in found} == {(2, 16)}
    assert await empty.hgetall(keys.LAYOUT) == {b"version": b"2", b"partitions": b"16"}


async def test_another_partition_count_is_refused_naming_both(empty, partitions):
    await layout.ensure(empty)
    partitions(8)
    with pytest.raises(layout.PartitionMismatch) as refused:
        await layout.ensure(empty)
    message = str(refused.value)
    assert "in 16 partitions" in message and "LIVESTATS_PARTITIONS=8" in message
    assert "set LIVESTATS_PARTITIONS=16" in message
    assert await empty.hget(keys.LAYOUT, "partitions") == b"16"  # untouched


async def test_the_first_process_on_an_empty_database_sets_the_count(empty, partitions):
    partitions(4)
    assert (await layout.ensure(empty)).partitions == 4
    assert keys.run_events("run-1") == f"livestats:run:{{p{keys.partition_of('run-1')}}}:run-1:events"
    assert keys.partition_of("run-1") < 4


LAYOUT_1_RUN = "01jq0000000000000000"


async def _token_record(redis):
    await redis.hset("livestats:auth:tokens", "0123456789ab", "{}")


async def _last_used(redis):
    await redis.hset("livestats:auth:tokens:last-used", "0123456789ab", "1")


async def _indexed_run(redis):
    await redis.zadd(keys.RUNS_INDEX, {"x:not-a-run": 1, LAYOUT_1_RUN: 2})
    await redis.hset(f"livestats:run:{{{LAYOUT_1_RUN}}}:stats", "status", "succeeded")


async def _active_run(redis):
    await redis.zadd(keys.RUNS_ACTIVE, {LAYOUT_1_RUN: 1})
    await redis.xadd(f"livestats:run:{{{LAYOUT_1_RUN}}}:events", {"type": "run.started"})


async def _run_in_the_feed(redis):
    await redis.xadd(keys.RUNS_FEED, {"run_id": LAYOUT_1_RUN, "type": "run.queued"})
    await redis.hset(f"livestats:run:{{{LAYOUT_1_RUN}}}:stats", "status", "queued")


@pytest.mark.parametrize("write", [_token_record, _last_used, _indexed_run, _active_run, _run_in_the_feed])
async def test_a_layout_1_database_is_refused_with_the_command_that_upgrades_it(empty, write):
    await write(empty)
    with pytest.raises(layout.LegacyLayout, match="livestats migrate") as refused:
        await layout.ensure(empty)
    assert "livestats:auth:" in str(refused.value) or f"{{{LAYOUT_1_RUN}}}" in str(refused.value)
    assert not await empty.exists(keys.LAYOUT)  # nothing written: the migration writes it


async def test_runs_published_before_any_record_are_not_mistaken_for_layout_1(empty):
    # A producer (the publisher API) may write first: runs, index and feed, under layout 2 names.
    async with Publisher(empty) as publisher:
        for name in ("first", "second"):
            await publisher.publish(new_run_id(), RunQueued(name=name, planned_calls=1, phases=[], timeout_s=60))
    assert await empty.exists(keys.RUNS_INDEX, keys.RUNS_FEED) == 2
    assert (await layout.ensure(empty)).created


async def test_an_interrupted_migration_and_an_unknown_version_are_refused(empty):
    await empty.hset(keys.LAYOUT, mapping={"migrating": "16"})
    with pytest.raises(layout.LayoutMigrating, match="run `livestats migrate` again"):
        await layout.ensure(empty)
    await empty.hset(keys.LAYOUT, mapping={"version": "2", "partitions": "16"})
    with pytest.raises(layout.LayoutMigrating):
        await layout.ensure(empty)  # `migrating` wins until the migration removes it
    await empty.delete(keys.LAYOUT)
    await empty.hset(keys.LAYOUT, mapping={"version": "3", "partitions": "16"})
    with pytest.raises(layout.UnknownLayout, match="layout '3'"):
        await layout.ensure(empty)


async def test_a_process_starting_before_its_server_waits_for_it(tmp_path):
    with fresh_server(tmp_path / "valkey") as server:
        client = connect(server.url, "livestats.tests")
        try:
            server.stop()
            with pytest.raises(UNAVAILABLE):
                await layout.ensure_when_reachable(client, attempts=2, delay_s=0.01)
            waiting = asyncio.create_task(layout.ensure_when_reachable(client, attempts=1_000, delay_s=0.02))
            await asyncio.to_thread(server.start)
            assert (await waiting).created
        finally:
            await client.aclose()
