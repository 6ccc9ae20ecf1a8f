"""`livestats keys RUN`: the names to give redis-cli, under the partition count the database records."""

from __future__ import annotations

import json

from helpers import livestats
from livestats_shared import keys
from livestats_shared.events import RunQueued
from livestats_shared.ids import new_run_id


async def test_keys_prints_every_name_of_the_run_and_its_partition(redis_url, queue_name, redis, publisher):
    code, out, err = await livestats(redis_url, queue_name, "keys", "run-1")
    assert code == 0, err
    first, *names = out.splitlines()
    assert first == "run run-1: partition 3 of 16 (hash tag {p3})"
    assert [line.split("#")[0].strip() for line in names] == [f"'{n}'" for n in keys.run_keys("run-1").values()]

    code, out, err = await livestats(redis_url, queue_name, "keys", "run-1", "--json")
    assert code == 0, err
    assert json.loads(out) == {"run_id": "run-1", "partition": 3, "partitions": 16, "keys": keys.run_keys("run-1")}
    # What it names is what the publisher writes: a run created now has its keys there.
    run_id = new_run_id()
    await publisher.publish(run_id, RunQueued(name="named", planned_calls=1, phases=[], timeout_s=60))
    code, out, err = await livestats(redis_url, queue_name, "keys", run_id, "--json")
    assert code == 0, err
    names = json.loads(out)["keys"]
    assert await redis.exists(names["events"], names["stats"], names["lifecycle"]) == 3

    code, _, err = await livestats(redis_url, queue_name, "keys", "a:b")
    assert code == 2 and "invalid run id" in err
