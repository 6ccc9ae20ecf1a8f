"""Cutting a batch into chunks, one EVALSHA each, and merging their stats deltas.

A chunk is a run of consecutive events of one run. Its deltas are merged in Python so the
script writes the hash once per chunk and spends its time on the XADDs. An awaited group or a
guarded event is a chunk of its own: it needs its exact (seq, id) and its own verdict.
Chunks are cut once and resent unchanged after a connection error, so the script can tell a
resent chunk (all of it already written) from a new one by the producer sequence alone.
Each chunk names the last producer seq of the chunk before it of the same run (`after`): if
that one was refused, the script defers this one, so a run's events keep their order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..stats import Delta
from .outbox import PendingEvent

MAX_CHUNK = 500  # events per script call: bounds how long one call holds the server


@dataclass(eq=False)
class Chunk:
    run_id: str
    items: list[PendingEvent]
    after: int | None = None  # last pseq of the run's previous chunk in the same pipeline

    @property
    def fence(self) -> str:
        return self.items[0].fence

    def script_args(self) -> list[str | bytes]:
        """ARGV[6...] of publish.lua for this chunk."""
        first, last = self.items[0], self.items[-1]
        delta = merge(i.delta for i in self.items)
        encoded = orjson.dumps(
            {
                "incr": [x for k, n in delta.incr.items() for x in (k, str(n))],
                "set": [x for kv in delta.set.items() for x in kv],
                "del": list(delta.delete),
            }
        )
        # The entries as one argument, a flat JSON array of strings: redis-py packs every argument
        # in Python, a large share of a publishing process's CPU at several arguments per event,
        # and the script splits it with cjson, in C (see publish.lua, ARGV[11]).
        flat: list[str] = []
        extend = flat.extend
        for item in self.items:
            extend((item.type, str(item.ts), item.data.decode()))
            extend(item.check)
        entries = orjson.dumps(flat)
        after = "" if self.after is None else str(self.after)
        return [
            str(first.pseq),
            str(last.pseq),
            first.guard,
            "1" if delta.finished else "0",
            encoded,
            entries,
            first.fence,
            after,
        ]


def merge(deltas: Iterable[Delta]) -> Delta:
    """The net effect of applying `deltas` in order (stats.apply), as one delta.

    Counter fields and set/deleted fields are disjoint in the event schema, so sums, "last set
    wins" and "deleted unless set again" compose exactly. Counter mappings that several deltas
    share (stats.delta_for reuses one for the most frequent event) are added once, times their
    number: this runs for every event published.
    """
    counters: dict[int, list[Any]] = {}  # id(incr mapping) -> [the mapping (kept alive: ids stay unique), times]
    sets: dict[str, str] = {}
    deleted: dict[str, None] = {}  # ordered set
    finished = False
    for d_incr, d_set, d_delete, d_finished in deltas:
        if d_incr:
            seen = counters.get(id(d_incr))
            if seen is None:
                counters[id(d_incr)] = [d_incr, 1]
            else:
                seen[1] += 1
        if d_set:
            sets.update(d_set)
            if deleted:
                for k in d_set:
                    deleted.pop(k, None)
        for k in d_delete:
            sets.pop(k, None)
            deleted[k] = None
        if d_finished:
            finished = True
    incr: dict[str, int] = {}
    for mapping, times in counters.values():
        for k, n in mapping.items():
            incr[k] = incr.get(k, 0) + n * times  # zero sums are kept: HINCRBY 0 still creates the field
    return Delta(incr=incr, set=sets, delete=tuple(deleted), finished=finished)


def cut(batch: list[PendingEvent]) -> list[Chunk]:
    """Chunks in queue order per run; an awaited group, a guarded or a lone event by itself; one
    fence per chunk."""
    chunks: list[Chunk] = []
    latest: dict[str, Chunk] = {}  # run -> its last chunk so far (events are only added to it)
    plain: dict[str, Chunk] = {}  # run -> its latest chunk if that takes fire-and-forget events

    def start(item: PendingEvent) -> Chunk:
        before = latest.get(item.run_id)
        chunk = Chunk(item.run_id, [], after=None if before is None else before.items[-1].pseq)
        chunks.append(chunk)
        latest[item.run_id] = chunk
        return chunk

    for item in batch:
        run_id = item.run_id
        if item.waiter is None and not item.guard and not item.alone:  # the common case, first
            chunk = plain.get(run_id)
            if chunk is None or len(chunk.items) >= MAX_CHUNK or chunk.fence != item.fence:
                chunk = plain[run_id] = start(item)
            chunk.items.append(item)
            continue
        plain.pop(run_id, None)
        chunk = latest.get(run_id)
        if item.waiter is None or chunk is None or chunk.items[0].waiter is not item.waiter:
            chunk = start(item)  # a group's events are queued together: one chunk
        chunk.items.append(item)
    return chunks
