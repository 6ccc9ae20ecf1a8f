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
        # The entries as one argument: redis-py packs every argument in Python, a large share of
        # a publishing process's CPU at three arguments per event (commit fc27a24); a NUL cannot occur
        # in a type, a decimal ts or JSON text, so it separates them.
        entries = b"\0".join(
            b"%s\0%d\0%s\0%s" % (item.type.encode(), item.ts, item.data, item.check) for item in self.items
        )
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
    wins" and "deleted unless set again" compose exactly.
    """
    incr: dict[str, int] = {}
    sets: dict[str, str] = {}
    deleted: dict[str, None] = {}  # ordered set
    finished = False
    for d in deltas:
        for k, n in d.incr.items():
            incr[k] = incr.get(k, 0) + n  # zero sums are kept: HINCRBY 0 still creates the field
        for k, v in d.set.items():
            sets[k] = v
            deleted.pop(k, None)
        for k in d.delete:
            sets.pop(k, None)
            deleted[k] = None
        finished = finished or d.finished
    return Delta(incr=incr, set=sets, delete=tuple(deleted), finished=finished)


def cut(batch: list[PendingEvent]) -> list[Chunk]:
    """Chunks in queue order per run; an awaited group, a guarded or a lone event by itself; one
    fence per chunk."""
    open_chunk: dict[str, Chunk] = {}
    last_pseq: dict[str, int] = {}
    chunks: list[Chunk] = []

    def start(item: PendingEvent) -> Chunk:
        chunk = Chunk(item.run_id, [], after=last_pseq.get(item.run_id))
        chunks.append(chunk)
        return chunk

    for item in batch:
        run_id = item.run_id
        if item.waiter is not None:
            chunk = open_chunk.get(run_id)
            if chunk is None or chunk.items[0].waiter is not item.waiter:
                chunk = open_chunk[run_id] = start(item)  # a group's events are queued together
            chunk.items.append(item)
        elif item.guard or item.alone:
            open_chunk.pop(run_id, None)
            start(item).items.append(item)
        else:
            chunk = open_chunk.get(run_id)
            if (
                chunk is None
                or len(chunk.items) >= MAX_CHUNK
                or chunk.items[0].waiter is not None
                or chunk.items[0].guard
                or chunk.fence != item.fence
            ):
                chunk = open_chunk[run_id] = start(item)
            chunk.items.append(item)
        last_pseq[run_id] = item.pseq
    return chunks
