"""`livestats runs`: the latest runs, newest first, from the run index and their snapshots."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import orjson
from livestats_shared import keys
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import validate_run_id
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_OK
from .terminal import safe

_PAGE = 200  # index entries read per round trip

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "stalled")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("runs", help="the latest runs, newest first")
    s.add_argument("--status", action="append", choices=STATUSES, help="only runs in this status (repeatable)")
    s.add_argument("--limit", type=positive, default=20, help="at most this many runs (default 20)")
    s.add_argument("--json", action="store_true", help="a JSON array of snapshots")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
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


COLUMNS = ("RUN", "STATUS", "STARTED (UTC)", "DURATION", "CALLS", "GIVEN UP", "OWNER", "NAME")


def show(runs: list[RunSnapshot], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps([r.model_dump(mode="json") for r in runs]) + b"\n")
        sys.stdout.flush()
        return
    rows = [COLUMNS, *(_row(r) for r in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _row(r: RunSnapshot) -> tuple[str, ...]:
    started = r.started_ts or r.created_ts
    when = datetime.fromtimestamp(started / 1000, UTC).strftime("%F %T") if started else "-"
    status = r.status + (f" ({safe(r.reason)})" if r.reason and r.status != "succeeded" else "")
    name = safe(r.name) + (" [external]" if r.external else "")
    return (
        r.run_id, status, when, _duration(r), f"{r.calls_done}/{r.planned_calls}", str(r.calls_given_up),
        safe(r.owner or "operator"), name,
    )  # fmt: skip


def _duration(r: RunSnapshot) -> str:
    """The run's elapsed time: as it ended, or so far (from its start, on this machine's clock)."""
    if r.elapsed_s is not None and r.finished_ts is not None:
        seconds = r.elapsed_s
    elif r.started_ts is not None:
        end = r.finished_ts or time.time() * 1000
        seconds = max(0.0, (end - r.started_ts) / 1000)
    else:
        return "-"
    s = int(seconds)
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{seconds:.1f}s"
    )
