"""`livestats tail RUN`: a live terminal view of one run, from Redis.

It starts from the snapshot and the last events read in one MULTI (so they agree), then
follows the stream with XREAD BLOCK from the snapshot's `last_id`. When the connection drops
it says so, backs off and resumes from the last event it showed: nothing is missed or doubled.
Exit status: 0 when the run succeeded, 1 when it ended otherwise, 3 if there is no such run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import cast

from livestats_shared import keys
from livestats_shared.cluster import atomically
from livestats_shared.control import UnknownRun
from livestats_shared.history import decode_entry
from livestats_shared.ids import validate_run_id
from livestats_shared.redis_client import UNAVAILABLE
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from .config import CliConfig
from .exit_codes import EXIT_OK, EXIT_RUN_FAILED
from .follow import report_invalid
from .tail_view import TailView

_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.2, 5.0
_BLOCK_MS = 1_000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("tail", help="a live view of a run: counters, a bar per phase, the last events")
    s.add_argument("run_id")
    s.add_argument("-n", "--lines", type=int, default=10, help="events shown (default 10)")
    s.add_argument("--interval", type=float, default=None, help="seconds between redraws (0.1 on a terminal, 1 else)")


async def run(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    run_id = validate_run_id(args.run_id)
    tty = sys.stdout.isatty()
    interval = args.interval if args.interval is not None else (0.1 if tty else 1.0)
    view = TailView(run_id, sys.stdout, tty=tty, events_shown=max(1, args.lines), min_interval_s=interval)
    stream = keys.run_events(run_id)

    def read(pipe: Pipeline) -> None:  # the snapshot and the events it counts, from one moment
        pipe.hgetall(keys.run_stats(run_id))
        pipe.xrevrange(stream, count=max(1, args.lines))

    replies = await atomically(redis, stream, read)
    raw, newest = cast(tuple[dict[bytes, bytes], list[tuple[bytes, dict[bytes, bytes]]]], tuple(replies))
    if not raw:
        raise UnknownRun(run_id)
    stats = {k.decode(): v.decode() for k, v in raw.items()}
    recent = [e for e in (decode_entry(i, f, report_invalid) for i, f in reversed(newest)) if e is not None]
    view.start(stats, recent)
    last = stats.get("last_id", "0-0")
    backoff = _BACKOFF_MIN_S
    while view.snapshot().finished_ts is None:
        try:
            reply = await redis.xread({stream: last}, block=_BLOCK_MS, count=1_000)
        except UNAVAILABLE as exc:
            view.note(f"connection lost ({type(exc).__name__}); resuming after {last} in {backoff:.1f} s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
            continue
        if backoff != _BACKOFF_MIN_S:
            view.note(f"resumed after {last}")
            backoff = _BACKOFF_MIN_S
        for _, entries in reply:
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                event = decode_entry(entry_id, fields, report_invalid)
                if event is not None:
                    view.update(event)
        view.render()
    view.render(force=True)
    return EXIT_OK if view.snapshot().outcome == "succeeded" else EXIT_RUN_FAILED
