"""`livestats runs`: the latest runs, newest first, from the run index and their snapshots."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import orjson
from livestats_shared import keys
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import validate_run_id
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_OK

_PAGE = 200  # index entries read per round trip

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "stalled")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("runs", help="the latest runs, newest first")
    s.add_argument("--status", action="append", choices=STATUSES, help="only runs in this status (repeatable)")
    s.add_argument("--limit", type=_positive, default=20, help="at most this many runs (default 20)")
    s.add_argument("--json", action="store_true", help="a JSON array of snapshots")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


async def latest_runs(redis: Redis, *, limit: int, statuses: set[str]) -> list[RunSnapshot]:
    """Up to `limit` runs, newest first; index entries whose run has expired are skipped."""
    found: list[RunSnapshot] = []
    start = 0
    while len(found) < limit:
        page = [i.decode() for i in await redis.zrevrange(keys.RUNS_INDEX, start, start + _PAGE - 1)]
        if not page:
            break
        start += len(page)
        ids = [i for i in page if _valid(i)]
        async with redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(keys.run_stats(run_id))
            hashes = await pipe.execute()
        for run_id, raw in zip(ids, hashes, strict=True):
            if not raw:
                continue
            snap = RunSnapshot.from_hash(run_id, {k.decode(): v.decode() for k, v in raw.items()})
            if not statuses or snap.status in statuses:
                found.append(snap)
    return found[:limit]


def _valid(run_id: str) -> bool:
    """An index entry someone added by hand is not a run: leave it out rather than fail."""
    try:
        validate_run_id(run_id)
    except InvalidRunId:
        return False
    return True


async def run(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    show(await latest_runs(redis, limit=args.limit, statuses=set(args.status or ())), as_json=args.json)
    return EXIT_OK


def show(runs: list[RunSnapshot], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps([r.model_dump(mode="json") for r in runs]) + b"\n")
        sys.stdout.flush()
        return
    for r in runs:
        created = datetime.fromtimestamp(r.created_ts / 1000, UTC).strftime("%F %T") if r.created_ts else "-"
        kind = " external" if r.external else ""
        print(f"{r.run_id:<26} {r.status:<10} {created}  {r.calls_done:>6}/{r.planned_calls:<6} {r.name}{kind}")
