"""`livestats replay FILE [--speed N | --instant]`: a past session, published again as new runs.

Each run of an export file (see export.py) becomes a new run with a new id whose `run.queued`
names the original (`replay_of`). Its events go through the shared Publisher like a worker's,
so the stream, the stats hash, the run index and every client see a live run. Events keep
their relative timing (divided by `--speed`), or go out at once with `--instant`; runs of one
file are interleaved on one timeline.

What the replay maps: the run id, each envelope's `ts` (the time it is published again),
`run.started`'s `deadline_ts` (kept at the same distance from the event, divided by the
speed) and, below speed 1, its `heartbeat_s` (so slowed heartbeats do not look like a stall).
Everything else is published unchanged, so export -> replay -> export gives the same events
but for ids and times. A run exported before it finished is replayed up to where it stopped;
its heartbeats then stop, and the gateway marks it `stalled` like any silent run.

The whole file is checked before anything is published: a bad line is exit code 2 and no
run is created.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from livestats_shared.errors import InvalidEvent, LivestatsError, PublishError
from livestats_shared.events import SCHEMA_VERSION, Event, EventData, RunQueued, RunStarted
from livestats_shared.ids import new_run_id
from livestats_shared.publish import NO_RUN, Publisher
from pydantic import ValidationError
from redis.asyncio import Redis

from .config import CliConfig
from .exit_codes import EXIT_BAD_INPUT, EXIT_OK
from .export import FORMAT, VERSION
from .progress import Progress

FLUSH_TIMEOUT_S = 60.0  # longest wait for the publisher to write what is queued
# An instant replay waits for the publisher every this many queued events: a run's stream holds
# up to 250,000 events, more than the publisher's outbox takes (it refuses, never drops).
BACKLOG_EVENTS = 10_000
OnStart = Callable[[str, str], None]  # (original run id, new run id)


class BadExport(LivestatsError):
    """The file is not a livestats export this version can replay."""


def add_parser(sub: Any) -> None:  # argparse's _SubParsersAction is private
    s = sub.add_parser("replay", help="publish an exported session again as new runs, seen live")
    s.add_argument("file", help="a file written by `livestats export` (- for stdin)")
    pace = s.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_speed, default=1.0, help="time factor (2 = twice as fast; default 1)")
    pace.add_argument("--instant", action="store_true", help="publish every event at once")
    s.add_argument("--json", action="store_true", help="print each new run as a JSON line")
    s.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.001 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be between 0.001 and 1000000")
    return value


async def run(redis: Redis, config: CliConfig, args: argparse.Namespace) -> int:
    try:
        # Off the loop: a long export is tens of megabytes.
        runs = read_export(await asyncio.to_thread(_read_lines, args.file))
    except (OSError, BadExport) as exc:
        print(f"error: cannot replay {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def started(original: str, new: str) -> None:
        line = orjson.dumps({"run_id": new, "replay_of": original}).decode()
        print(line if args.json else f"replaying run {original} as {new}", flush=True)

    progress = Progress("replayed", sum(len(e) for e in runs.values()), forced=args.progress)
    async with Publisher(redis, replica_ack=config.replica_ack()) as publisher:
        speed = None if args.instant else args.speed
        await replay(publisher, runs, speed=speed, on_start=started, on_event=progress.advance)
    progress.finish()
    if not args.json:
        print(f"replayed {sum(len(e) for e in runs.values())} events of {len(runs)} runs")
    return EXIT_OK


def _read_lines(path: str) -> list[bytes]:
    if path == "-":
        return sys.stdin.buffer.read().splitlines()
    with open(path, "rb") as f:
        return f.read().splitlines()


def read_export(lines: Iterable[bytes]) -> dict[str, list[Event]]:
    """Each run's events, in file order. Raises BadExport naming the first bad line."""
    numbered = ((n, line) for n, line in enumerate(lines, start=1) if line.strip())
    first = next(numbered, None)
    if first is None:
        raise BadExport("the file is empty")
    header = _json(*first)
    if header.get("format") != FORMAT:
        raise BadExport(f"line {first[0]}: not a {FORMAT} header (was it written by `livestats export`?)")
    if header.get("version") != VERSION:
        raise BadExport(f"line {first[0]}: export version {header.get('version')!r}; this livestats reads {VERSION}")
    runs: dict[str, list[Event]] = {}
    for number, line in numbered:
        try:
            event = Event.model_validate(_json(number, line))
            event.payload()
        except (ValidationError, InvalidEvent) as exc:
            raise BadExport(f"line {number}: not a livestats event: {exc}") from exc
        if event.v != SCHEMA_VERSION:
            raise BadExport(f"line {number}: event schema {event.v}; this livestats reads {SCHEMA_VERSION}")
        events = runs.setdefault(event.run_id, [])
        if events and event.seq <= events[-1].seq:
            raise BadExport(f"line {number}: run {event.run_id} seq {event.seq} after {events[-1].seq} (repeated?)")
        events.append(event)
    if not runs:
        raise BadExport("the file holds no events")
    for run_id, events in runs.items():
        if events[0].type != RunQueued.TYPE:
            # A stream trimmed by MAXLEN lost its start: a run cannot begin in the middle.
            raise BadExport(f"run {run_id} does not start with run.queued (seq {events[0].seq} comes first)")
    return runs


def _json(number: int, line: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadExport(f"line {number}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadExport(f"line {number}: not a JSON object")
    return doc


async def replay(
    publisher: Publisher,
    runs: dict[str, list[Event]],
    *,
    speed: float | None,
    on_start: OnStart,
    on_event: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Publish `runs` again under new ids (returned, by original id). `speed` None: at once."""
    new_ids: dict[str, str] = {original: new_run_id() for original in runs}
    loop = asyncio.get_running_loop()
    start = loop.time()
    origin = min(events[0].ts for events in runs.values())
    # heapq.merge keeps each run's own order (seq) even where its timestamps are not monotonic.
    for event in heapq.merge(*runs.values(), key=lambda e: e.ts):
        if speed is not None:
            delay = start + max(0, event.ts - origin) / 1000 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        new_id = new_ids[event.run_id]
        now_ms = int(time.time() * 1000)
        data = _mapped(event, speed, now_ms)
        if isinstance(data, RunQueued):
            # Awaited and guarded: the new run must not exist, and it must exist before its events.
            replay_of = data.model_copy(update={"replay_of": event.run_id})
            await publisher.publish(new_id, replay_of, guard=(NO_RUN,), ts=now_ms)
            on_start(event.run_id, new_id)
        else:
            publisher.emit(new_id, data, ts=now_ms)
            if len(publisher.outbox) >= BACKLOG_EVENTS:
                await _flush(publisher)
        if on_event is not None:
            on_event()  # queued for publishing (the last flush below waits for all of them)
    await _flush(publisher)
    return new_ids


async def _flush(publisher: Publisher) -> None:
    if not await publisher.flush(FLUSH_TIMEOUT_S):
        raise PublishError(f"{len(publisher.outbox)} replayed events not written within {FLUSH_TIMEOUT_S:g} s")


def _mapped(event: Event, speed: float | None, now_ms: int) -> EventData:
    """The event's payload as the replay publishes it at `now_ms` (its new `ts`)."""
    data = event.payload()
    if not isinstance(data, RunStarted):
        return data
    factor = speed or 1.0  # instant: the deadline keeps its real distance
    update: dict[str, object] = {"deadline_ts": now_ms + round((data.deadline_ts - event.ts) / factor)}
    if data.heartbeat_s is not None and factor < 1:
        update["heartbeat_s"] = data.heartbeat_s / factor
    return data.model_copy(update=update)
