"""A bounded, thread-safe FIFO of events waiting to be written to Redis."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ..errors import OutboxFull
from ..stats import Delta
from .gate import NO_CHECK, Check

if TYPE_CHECKING:
    from .gate import EventRefused


class Written(NamedTuple):
    """What the script answered for an awaited group: first seq, last stream id, owner epoch."""

    first_seq: int
    last_id: str
    epoch: str


@dataclass(eq=False)
class Waiter:
    """Someone awaiting a group of events published together (all of it is written, or none)."""

    future: asyncio.Future[Written]
    deadline: float  # loop time after which the publish gives up
    size: int  # events in the group


@dataclass(eq=False, slots=True)
class PendingEvent:
    run_id: str
    type: str
    ts: int
    data: bytes  # the payload as JSON, encoded once by the producer
    delta: Delta
    pseq: int  # producer sequence: lets the script drop a chunk we resend after an outage
    guard: str = ""  # statuses the run must be in ('' = any)
    waiter: Waiter | None = None  # set for awaited publishes (shared by the group's events)
    check: Check = NO_CHECK  # what the script's state machine reads of it (gate.check_of)
    fence: str = ""  # the owner epoch the producer holds ('' = unfenced)
    on_refused: Callable[[EventRefused], None] | None = None  # fire-and-forget: told of a refusal
    alone: bool = field(default=False)  # resent in a chunk of its own (a range refusal in its chunk)

    @property
    def deadline(self) -> float:
        return float("inf") if self.waiter is None else self.waiter.deadline


class Outbox:
    """FIFO with a hard capacity. `put` never blocks: when full it raises OutboxFull."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[PendingEvent] = deque()
        self._lock = threading.Lock()
        self._seq = 0
        self.refused = 0  # events refused because the outbox was full

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: PendingEvent) -> PendingEvent:
        """Append `item` with its producer sequence, assigned under the same lock as the append,
        so producer order equals queue order whichever thread calls. (put_all for one item,
        without its loop: this runs once per emitted event.)"""
        with self._lock:
            if len(self._items) >= self.capacity:
                self.refused += 1
                raise OutboxFull(
                    f"outbox full ({self.capacity} events waiting for Redis); 1 event(s) refused, "
                    f"{self.refused} refused so far"
                )
            self._seq += 1
            item.pseq = self._seq
            self._items.append(item)
        return item

    def put_all(self, items: Sequence[PendingEvent]) -> None:
        """Append `items` together (no other thread's event between them), or none of them."""
        with self._lock:
            if len(self._items) + len(items) > self.capacity:
                self.refused += len(items)
                raise OutboxFull(
                    f"outbox full ({self.capacity} events waiting for Redis); {len(items)} event(s) refused, "
                    f"{self.refused} refused so far"
                )
            for item in items:
                self._seq += 1
                item.pseq = self._seq
                self._items.append(item)

    def peek_batch(self, limit: int) -> list[PendingEvent]:
        """The oldest `limit` items, left in place until `commit` removes them."""
        with self._lock:
            n = min(limit, len(self._items))
            return [self._items[i] for i in range(n)]

    def remove(self, items: list[PendingEvent]) -> None:
        """Remove the given items: normally the head returned by peek_batch, or expired waiters."""
        with self._lock:
            queue = self._items
            removed = 0
            for item in items:  # the common case: `items` is the head, in order
                if not queue or queue[0] is not item:
                    break
                queue.popleft()
                removed += 1
            if removed == len(items):
                return
            done = {id(i) for i in items[removed:]}
            while queue and id(queue[0]) in done:
                queue.popleft()
                removed += 1
            if removed < len(items):  # some were not at the head (expired waiters): rebuild
                self._items = deque(i for i in queue if id(i) not in done)
