"""`livestats keys RUN_ID`: the names of a run's keys, for redis-cli. With key layout 2 a name
holds the run's partition (docs/keys.md), which nobody can work out by eye."""

from __future__ import annotations

import argparse

import orjson
from livestats_shared import keys
from livestats_shared.ids import validate_run_id
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_OK

_TYPES = {
    "events": "stream: the run's events",
    "stats": "hash: its live snapshot",
    "lifecycle": "hash: owner epoch, open calls and phases",
    "cancel": "string: set while a cancel is asked for",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("keys", help="the Redis key names of a run (its partition is in them), for redis-cli")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true", help="print {partition, partitions, keys: {kind: name}}")


async def run(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    """Named under the partition count the database records (checked before this runs)."""
    run_id = validate_run_id(args.run_id)
    names = keys.run_keys(run_id)
    partition = keys.partition_of(run_id)
    if args.json:
        doc = {"run_id": run_id, "partition": partition, "partitions": keys.partitions(), "keys": names}
        print(orjson.dumps(doc).decode())
        return EXIT_OK
    print(f"run {run_id}: partition {partition} of {keys.partitions()} (hash tag {keys.partition_tag(partition)})")
    for kind, name in names.items():
        print(f"  '{name}'   # {_TYPES[kind]}")
    return EXIT_OK
