"""Publish run events to Redis: one ordered, batched, retrying writer per process.

Every event goes through one outbox and one drain task, which cuts a batch into chunks of
one run's events and writes each chunk with a single EVALSHA (assign seq, apply the merged
stats delta, XADD each event: atomically).
Two ways in:

* `await publish(...)`: waits for the write and returns (seq, stream id, owner epoch). Raises
  PublishError if Redis stays unavailable past the timeout, RunStateConflict if a guard refused
  it, EventRefused if it breaks the contract (gate.py). `await publish_all(...)` does the same
  for several events of one run: all of them are written, or none.
* `emit(...)`: fire-and-forget from any thread. The event waits in the bounded outbox until
  Redis takes it, across outages; a full outbox raises OutboxFull to the caller. Nothing is
  dropped silently: an event the script refuses goes to the producer's `on_refused` (the
  rest of its chunk is still written, in order).

Every chunk passes the script's gate (publish.lua): the lifecycle order, the owner's fence and
the counters' range are checked before anything is written.

Chunks resent after a connection error are recognised by the script from the producer
sequence, so an outage neither loses nor doubles an event. With replica acknowledgement on
(replicas.py), a chunk is done only once enough replicas hold it, so it survives a failover.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from .. import keys
from ..compat import pipeline_evalsha
from ..errors import PublishError, RunStateConflict
from ..events import (
    MAX_SAFE_INT,
    SCHEMA_VERSION,
    EventData,
    PhaseFinished,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
)
from ..ids import validate_run_id
from ..redis_client import UNAVAILABLE
from ..stats import delta_for
from ..visibility import index_visibility
from .chunks import Chunk, cut
from .gate import EventRefused, RefusalCode, check_of
from .outbox import Outbox, PendingEvent, Waiter, Written
from .replicas import NO_ACK, Acknowledgement, NotReplicated, ReplicaAck

log = logging.getLogger("livestats.publisher")

SCRIPT = (files("livestats_shared.publish") / "publish.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
NO_RUN = "~"  # guard token: the run must not exist yet
_LIFECYCLE = {m.TYPE for m in (RunQueued, RunStarted, RunFinished, PhaseStarted, PhaseFinished)}
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.05, 2.0
_RESENT_ON: tuple[type[Exception], ...] = (*UNAVAILABLE, NotReplicated)  # the chunks stay and are resent


class Published(NamedTuple):
    seq: int
    id: str
    epoch: str = ""  # the run's owner epoch after the write (run.started: the producer's fence)


class PublishedAll(NamedTuple):
    first_seq: int
    last_seq: int
    last_id: str
    epoch: str = ""


OnRefused = Callable[[EventRefused], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher:
    def __init__(
        self,
        redis: Redis,
        *,
        producer: str | None = None,
        capacity: int = 100_000,
        batch_size: int = 1_000,
        stream_maxlen: int = keys.RUN_STREAM_MAXLEN,
        retention_s: int = keys.RUN_RETENTION_S,
        publish_timeout_s: float = 5.0,
        command_timeout_s: float = 10.0,
        replica_ack: ReplicaAck = NO_ACK,
    ) -> None:
        if replica_ack.timeout_ms >= command_timeout_s * 1000:
            raise ValueError(f"the replica timeout ({replica_ack.timeout_ms} ms) must be shorter than a command's")
        self.redis = redis
        self.producer = producer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.outbox = Outbox(capacity)
        self.batch_size = batch_size
        self.stream_maxlen = stream_maxlen
        self.retention_s = retention_s
        self.publish_timeout_s = publish_timeout_s
        self.command_timeout_s = command_timeout_s
        self.published = 0  # events written
        self.duplicates = 0  # re-sent events the script recognised
        self.failed = 0  # events Redis rejected outright (never retried)
        self.refused = 0  # events the script's gate refused (they break the contract)
        self.outages = 0  # times Redis became unavailable (or, with acknowledgement on, the replicas lagged)
        self.acks = Acknowledgement(replica_ack)  # counts the chunks replicas did not acknowledge in time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Publisher:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._drain(), name="livestats-publisher")
        self._task.add_done_callback(self._drain_ended)
        return self

    def _drain_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Nothing should get here (the loop handles every error); if it does, say so loudly.
            log.critical("publisher drain task died; events will not be written", exc_info=task.exception())

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Flush within the bound, then stop. Events still buffered are reported, not hidden."""
        self._closed = True
        flushed = await self.flush(flush_timeout_s)
        if not flushed:
            log.error("publisher closing with %d events not written to Redis", len(self.outbox))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def __aenter__(self) -> Publisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every event emitted so far is written; False if the bound ran out."""
        deadline = time.monotonic() + timeout_s
        while len(self.outbox):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # -- producing ---------------------------------------------------------------------------

    def emit(
        self,
        run_id: str,
        data: EventData,
        *,
        ts: int | None = None,
        fence: str = "",
        on_refused: OnRefused | None = None,
    ) -> None:
        """Queue an event without waiting. Thread-safe. Raises OutboxFull, never drops silently.
        `fence`: the owner epoch the producer holds (from its run.started). `on_refused` is
        called on the publisher's loop if the gate refuses the event; without it the refusal is
        logged as an error."""
        self.outbox.put(self._item(run_id, data, ts, fence=fence, on_refused=on_refused))
        self._wake_drain()

    async def publish(
        self,
        run_id: str,
        data: EventData,
        *,
        guard: tuple[str, ...] = (),
        ts: int | None = None,
        timeout_s: float | None = None,
        fence: str = "",
    ) -> Published:
        """Write one event and wait for it. `guard` lists the statuses the run must be in
        (NO_RUN for "must not exist"); otherwise RunStateConflict and nothing is written.
        EventRefused if the gate refuses it."""
        written = await self.publish_all(run_id, [data], guard=guard, ts=ts, timeout_s=timeout_s, fence=fence)
        return Published(written.first_seq, written.last_id, written.epoch)

    async def publish_all(
        self,
        run_id: str,
        events: Sequence[EventData],
        *,
        guard: tuple[str, ...] = (),
        ts: int | Sequence[int | None] | None = None,
        timeout_s: float | None = None,
        fence: str = "",
    ) -> PublishedAll:
        """Write `events` of one run in one atomic step and wait: all of them, or none (the
        first event the gate refuses raises EventRefused with its index). `ts`: one for all, or
        one per event."""
        if not events:
            raise ValueError("publish_all needs at least one event")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Written] = loop.create_future()
        deadline = loop.time() + (timeout_s if timeout_s is not None else self.publish_timeout_s)
        stamps = list(ts) if isinstance(ts, Sequence) else [ts] * len(events)
        waiter = Waiter(future, deadline, len(events))
        items = [
            self._item(run_id, data, stamp, fence=fence, guard=" ".join(guard), waiter=waiter)
            for data, stamp in zip(events, stamps, strict=True)
        ]
        self._put(items)
        first_seq, last_id, epoch = await future
        return PublishedAll(first_seq, first_seq + len(items) - 1, last_id, epoch)

    def _item(
        self,
        run_id: str,
        data: EventData,
        ts: int | None,
        *,
        fence: str,
        guard: str = "",
        waiter: Waiter | None = None,
        on_refused: OnRefused | None = None,
    ) -> PendingEvent:
        if self._loop is None or self._closed:
            raise PublishError("publisher not running: start it first, and do not use it after close()")
        validate_run_id(run_id)
        ts = _now_ms() if ts is None else ts
        if not 0 <= ts <= MAX_SAFE_INT:
            raise ValueError(f"ts {ts} is not epoch milliseconds in [0, 2^53-1]")
        # Once, in the producer's thread. The serializer itself: model_dump_json is the same
        # bytes decoded to str, which would only be encoded again.
        payload = data.__pydantic_serializer__.to_json(data)
        # pseq (0 here) is assigned by the outbox, under its lock. Positional: keyword arguments
        # double the cost of building it, once per event.
        delta, check = delta_for(data, ts), check_of(data)
        return PendingEvent(run_id, data.TYPE, ts, payload, delta, 0, guard, waiter, check, fence, on_refused)

    def _put(self, items: list[PendingEvent]) -> None:
        self.outbox.put_all(items)
        self._wake_drain()

    def _wake_drain(self) -> None:
        """Wake the drain task, from its own loop's thread or any other."""
        assert self._loop is not None  # _item checked it
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- draining ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        backoff = _BACKOFF_MIN_S
        down_since: float | None = None
        chunks: list[Chunk] = []  # in flight: resent exactly as cut until Redis takes them
        while True:
            if not chunks:
                batch = self.outbox.peek_batch(self.batch_size)
                if not batch:
                    self._wake.clear()
                    if not len(self.outbox):
                        await self._wake.wait()
                    continue
                chunks = cut(batch)
            try:
                # A server that stops answering without closing the socket counts as an outage
                # (TimeoutError is an OSError); the chunks are resent once it is back.
                async with asyncio.timeout(self.command_timeout_s):
                    await self._write(chunks)
            except _RESENT_ON as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    self.outages += 1
                    log.warning(
                        "Redis unavailable (%s: %s); %d events buffered, retrying",
                        type(exc).__name__,
                        exc,
                        len(self.outbox),
                    )
                chunks = self._expire_waiters(chunks, exc)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            except Exception as exc:
                # Not an outage and not a per-run refusal: a bug or a server that answers
                # nonsense. Retrying would block every later event behind these, so they are
                # refused, loudly, and the drain goes on.
                items = [i for c in chunks for i in c.items]
                log.exception("publisher: cannot write a batch of %d events; refusing them", len(items))
                self.outbox.remove(items)
                self._reject(items, exc)
            chunks = []
            if down_since is not None:
                log.warning(
                    "Redis available again after %.1f s; %d events still buffered",
                    time.monotonic() - down_since,
                    len(self.outbox),
                )
                down_since = None
            backoff = _BACKOFF_MIN_S

    async def _write(self, chunks: list[Chunk]) -> None:
        results, waited = await self._run_scripts(chunks)
        if any(isinstance(r, NoScriptError) for r in results):
            # Server restarted, failed over (or SCRIPT FLUSH): load and resend; chunks already
            # written are recognised by their producer sequence.
            await self.redis.script_load(SCRIPT)
            results, waited = await self._run_scripts(chunks)
        for r in results:
            if isinstance(r, UNAVAILABLE):
                raise r
        self.acks.confirm(waited, chunks)
        async with self.redis.pipeline(transaction=False) as index_pipe:
            await self._settle_all(chunks, results, index_pipe)

    async def _settle_all(self, chunks: list[Chunk], results: list[Any], index_pipe: Pipeline) -> None:
        index_writes = 0
        verdicts: list[tuple[Chunk, list[Any]]] = []
        rejected: list[tuple[Chunk, Exception]] = []
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, Exception):
                rejected.append((chunk, result))
                continue
            reply = [r.decode() if isinstance(r, bytes) else r for r in result]
            status, seq = int(reply[0]), int(reply[1])
            if status in (0, 1):
                for offset, item in enumerate(chunk.items):
                    if item.type in _LIFECYCLE:
                        self._index(index_pipe, item, seq + offset if status == 1 else seq)
                        index_writes += 1
            verdicts.append((chunk, reply))
        if index_writes:
            self.acks.request(index_pipe)
            replies = await index_pipe.execute()
            self.acks.confirm(replies[-1] if self.acks.on else None, chunks)
        # Only now are these events done: an outage before this point resends all of them.
        # Events of a deferred chunk, and those of a refused one that were not at fault, stay
        # in the outbox, in order, for the next round.
        keep: set[int] = set()
        for chunk, reply in verdicts:
            keep.update(id(i) for i in self._kept(chunk, reply))
        self.outbox.remove([i for c in chunks for i in c.items if id(i) not in keep])
        for chunk, exc in rejected:
            self._reject(chunk.items, exc)
        for chunk, reply in verdicts:
            self._settle(chunk, reply, keep)

    @staticmethod
    def _kept(chunk: Chunk, reply: list[Any]) -> list[PendingEvent]:
        """The chunk's events to publish again in the next round (none were written)."""
        status, items = int(reply[0]), chunk.items
        if status == -3:
            return items
        if status != -2 or items[0].waiter is not None:  # an awaited group is all or nothing
            return []
        index, code = int(reply[1]), RefusalCode(reply[2])
        if index < 0:  # a counter out of range, event unknown: each event alone finds it
            if len(items) == 1:
                return []
            for item in items:
                item.alone = True
            return items
        if code in (RefusalCode.FINISHED, RefusalCode.FENCED):
            return items[:index]  # and nothing after it can be written either
        return items[:index] + items[index + 1 :]

    def _settle(self, chunk: Chunk, reply: list[Any], kept: set[int]) -> None:
        status, n, first = int(reply[0]), len(chunk.items), chunk.items[0]
        if status == 1:
            self.published += n
        elif status == 0:
            self.duplicates += n
        waiter = first.waiter  # an awaited group is always a chunk by itself
        if status == -1:
            info = str(reply[2])
            conflict = RunStateConflict(first.run_id, None if info == NO_RUN else info)
            if waiter is None:
                log.error("event %s for run %s refused: %s", first.type, first.run_id, conflict)
            elif not waiter.future.done():
                waiter.future.set_exception(conflict)
        elif status == -2:
            index, code, message = int(reply[1]), RefusalCode(reply[2]), str(reply[3])
            self._refused(chunk, index, code, message, kept)
        elif status in (0, 1) and waiter is not None and not waiter.future.done():
            epoch = str(reply[3]) if len(reply) > 3 else ""
            waiter.future.set_result(Written(int(reply[1]), str(reply[2]), epoch))

    def _refused(self, chunk: Chunk, index: int, code: RefusalCode, message: str, kept: set[int]) -> None:
        """Tell the producers of the refused events: the awaiter, or each event's on_refused."""
        items = chunk.items
        waiter = items[0].waiter
        if waiter is not None:
            self.refused += len(items)
            at = max(index, 0)
            if not waiter.future.done():
                waiter.future.set_exception(EventRefused(chunk.run_id, items[at].type, at, code, message))
            return
        for item in items:
            if id(item) in kept:
                continue
            self.refused += 1
            refusal = EventRefused(item.run_id, item.type, 0, code, message)
            if item.on_refused is None:
                log.error("%s", refusal)
                continue
            try:
                item.on_refused(refusal)
            except Exception:
                # The producer's handler failed: the drain must go on for every other run.
                log.exception("on_refused handler for run %s failed on %s", item.run_id, refusal)

    def _reject(self, items: list[PendingEvent], exc: Exception) -> None:
        """Redis refused the write itself (not an outage): retrying cannot help."""
        self.failed += len(items)
        log.error(
            "%d events (runs %s) not written: %s: %s",
            len(items),
            sorted({i.run_id for i in items}),
            type(exc).__name__,
            exc,
        )
        for item in items:
            if item.waiter is not None and not item.waiter.future.done():
                item.waiter.future.set_exception(PublishError(f"Redis rejected the event: {exc}"))

    def _expire_waiters(self, chunks: list[Chunk], exc: BaseException) -> list[Chunk]:
        """Awaited publishes past their deadline fail now; fire-and-forget events keep waiting.
        Returns the in-flight chunks that remain (an awaited group is always a chunk alone)."""
        assert self._loop is not None
        now = self._loop.time()
        expired = [i for i in self.outbox.peek_batch(len(self.outbox)) if i.deadline <= now]
        if not expired:
            return chunks
        self.outbox.remove(expired)
        for item in expired:
            if item.waiter is not None and not item.waiter.future.done():
                item.waiter.future.set_exception(
                    PublishError(
                        f"Redis unavailable ({type(exc).__name__}: {exc}); {item.type} for run "
                        f"{item.run_id} may not have been written"
                    )
                )
        gone = {id(i) for i in expired}
        return [c for c in chunks if id(c.items[0]) not in gone]

    async def _run_scripts(self, chunks: list[Chunk]) -> tuple[list[Any], Any]:
        """Each chunk's script reply (or error), and WAIT's answer when acknowledgement is on."""
        head = [self.producer, str(self.stream_maxlen), str(self.retention_s)]
        # `async with`: a pipeline interrupted by cancellation still returns its connection.
        async with self.redis.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                run_id = chunk.run_id
                args = [*head, run_id, str(SCHEMA_VERSION), *chunk.script_args()]
                run_keys = [keys.run_events(run_id), keys.run_stats(run_id), keys.run_lifecycle(run_id)]
                pipeline_evalsha(pipe, SCRIPT_SHA, run_keys, args)  # one slot: the run's hash tag
            self.acks.request(pipe)  # on the same connection, right after the writes
            return self.acks.script_replies(chunks, list(await pipe.execute(raise_on_error=False)))

    def _index(self, pipe: Pipeline, item: PendingEvent, seq: int) -> None:
        """Mirror lifecycle changes into the run index (a separate slot: not in the script)."""
        if item.type == "run.queued":
            pipe.zadd(keys.RUNS_INDEX, {item.run_id: item.ts}, nx=True)
            pipe.zremrangebyscore(keys.RUNS_INDEX, "-inf", item.ts - self.retention_s * 1000)
            index_visibility(pipe, item.run_id, item.ts, item.delta.set, self.retention_s)
        elif item.type == "run.started":
            pipe.zadd(keys.RUNS_ACTIVE, {item.run_id: item.ts})
        elif item.type == "run.finished":
            pipe.zrem(keys.RUNS_ACTIVE, item.run_id)
        status = item.delta.set.get("status", "")
        fields: dict[str, str | int] = {"run_id": item.run_id, "type": item.type, "seq": seq, "ts": item.ts}
        if status:
            fields["status"] = status
        if "current_phase" in item.delta.set:
            fields["phase"] = item.delta.set["current_phase"]
        pipe.xadd(keys.RUNS_FEED, fields, maxlen=keys.RUNS_FEED_MAXLEN, approximate=True)  # type: ignore[arg-type]
