"""`livestats export RUN_ID... [-o FILE] [--estimation]`: runs as a file that replay reads back.

The format is NDJSON. The first line is a header,
    {"format": "livestats.export", "version": 1, "event_schema": 1, "runs": [...], "exported_ts": ms}
then every event of each run, oldest first, exactly as stored: the envelope (`v`, `type`,
`run_id`, `seq`, `ts`, `data`) and its stream `id`, as `livestats events` prints it.
With `--estimation` the file is instead one estimation sample per line (no header), in the
format `livestats report --estimation` reads.

Stream entries that are not livestats events (added by hand) cannot be replayed: they are
reported, left out, and the exit code is 1. `-o FILE` is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidEvent, LivestatsError
from livestats_shared.estimation import run_samples
from livestats_shared.events import SCHEMA_VERSION
from livestats_shared.history import iter_events, read_snapshot
from livestats_shared.ids import RunId, validate_run_id
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK
from .progress import Progress

FORMAT = "livestats.export"
VERSION = 1  # of the file layout; each event carries its own schema version `v`


def add_parser(sub: Any) -> None:  # argparse's _SubParsersAction is private
    s = sub.add_parser("export", help="every event of runs as NDJSON, for `replay` and archives")
    s.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    s.add_argument("--estimation", action="store_true", help="write one estimation sample per line instead")
    s.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")


# Where a run's events come from: Redis (here) or a gateway's history pages (remote.py); each as
# its JSON envelope with its stream `id`. Entries that are not events go to the callback.
EventSource = Callable[[RunId, Callable[[InvalidEvent], None]], AsyncIterator[dict[str, Any]]]
SnapshotSource = Callable[[RunId], Awaitable[RunSnapshot | None]]


async def run(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    async def events(rid: RunId, on_invalid: Callable[[InvalidEvent], None]) -> AsyncIterator[dict[str, Any]]:
        async for event in iter_events(redis, rid, on_invalid=on_invalid):
            yield event.model_dump(mode="json")

    return await export(lambda rid: read_snapshot(redis, rid), events, args)


async def export(snapshot_of: SnapshotSource, events_of: EventSource, args: argparse.Namespace) -> int:
    run_ids = list(dict.fromkeys(validate_run_id(r) for r in args.run_ids))  # each run once
    snapshots: list[RunSnapshot] = []
    for rid in run_ids:
        snap = await snapshot_of(rid)
        if snap is None:
            raise UnknownRun(rid)
        snapshots.append(snap)
    try:
        return await _export(events_of, run_ids, snapshots, args)
    except CannotWrite as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


class CannotWrite(LivestatsError):
    pass


async def _export(
    events_of: EventSource, run_ids: list[RunId], snapshots: list[RunSnapshot], args: argparse.Namespace
) -> int:
    skipped: list[InvalidEvent] = []
    progress = Progress("exported", sum(s.seq for s in snapshots), forced=args.progress)
    with _output(args.output) as out:
        if args.estimation:
            for snap in snapshots:
                for sample in run_samples(snap):
                    out.write(sample.model_dump_json().encode() + b"\n")
        else:
            header = {
                "format": FORMAT,
                "version": VERSION,
                "event_schema": SCHEMA_VERSION,
                "runs": run_ids,
                "exported_ts": int(time.time() * 1000),
            }
            out.write(orjson.dumps(header) + b"\n")
            for rid in run_ids:
                async for event in events_of(rid, skipped.append):
                    out.write(orjson.dumps(event) + b"\n")
                    progress.advance()
            progress.finish()
    for exc in skipped:
        print(f"warning: left out a stream entry that is not a livestats event: {exc}", file=sys.stderr)
    return EXIT_ERROR if skipped else EXIT_OK


@contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a temporary file beside `path` renamed over it only once everything is written."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        # Not left to the caller: the CLI reads a bare OSError as "Redis unavailable".
        raise CannotWrite(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
