"""Publish run events to Redis: one ordered, batched, retrying writer per process.

Every event goes through one outbox and one drain task, which cuts a batch into chunks of
one run's events and writes each chunk with a single EVALSHA (assign seq, apply the merged
stats delta, XADD each event: atomically).
Two ways in:

* `await publish(...)`: waits for the write and returns (seq, stream id). Raises PublishError
  if Redis stays unavailable past the timeout, RunStateConflict if a guard refused it.
* `emit(...)`: fire-and-forget from any thread. The event waits in the bounded outbox until
  Redis takes it, across outages; a full outbox raises OutboxFull to the caller. Nothing is
  dropped silently.

Chunks resent after a connection error are recognised by the script from the producer
sequence, so an outage neither loses nor doubles an event.
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
from importlib.resources import files
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from .. import keys
from ..errors import PublishError, RunStateConflict
from ..events import (
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
from .outbox import Outbox, PendingEvent

log = logging.getLogger("livestats.publisher")

SCRIPT = (files("livestats_shared.publish") / "publish.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
NO_RUN = "~"  # guard token: the run must not exist yet
_LIFECYCLE = {m.TYPE for m in (RunQueued, RunStarted, RunFinished, PhaseStarted, PhaseFinished)}
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.05, 2.0


class Published(NamedTuple):
    seq: int
    id: str


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
    ) -> None:
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
        self.outages = 0  # times Redis became unavailable
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

    def emit(self, run_id: str, data: EventData, *, ts: int | None = None) -> None:
        """Queue an event without waiting. Thread-safe. Raises OutboxFull, never drops silently."""
        self._put(run_id, data, ts, guard="", future=None, deadline=float("inf"))

    async def publish(
        self,
        run_id: str,
        data: EventData,
        *,
        guard: tuple[str, ...] = (),
        ts: int | None = None,
        timeout_s: float | None = None,
    ) -> Published:
        """Write one event and wait for it. `guard` lists the statuses the run must be in
        (NO_RUN for "must not exist"); otherwise RunStateConflict and nothing is written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str]] = loop.create_future()
        deadline = loop.time() + (timeout_s if timeout_s is not None else self.publish_timeout_s)
        self._put(run_id, data, ts, guard=" ".join(guard), future=future, deadline=deadline)
        seq, entry_id = await future
        return Published(seq, entry_id)

    def _put(
        self,
        run_id: str,
        data: EventData,
        ts: int | None,
        *,
        guard: str,
        future: asyncio.Future[tuple[int, str]] | None,
        deadline: float,
    ) -> None:
        if self._loop is None or self._closed:
            raise PublishError("publisher not running: start it first, and do not use it after close()")
        validate_run_id(run_id)
        ts = _now_ms() if ts is None else ts
        delta = delta_for(data, ts)
        payload = data.model_dump_json().encode()  # once, in the producer's thread
        # pseq is assigned by the outbox, under its lock
        self.outbox.put(PendingEvent(run_id, data.TYPE, ts, payload, delta, 0, guard, future, deadline))
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
            except UNAVAILABLE as exc:
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
        results = await self._run_scripts(chunks)
        if any(isinstance(r, NoScriptError) for r in results):
            # Server restarted (or SCRIPT FLUSH): load and resend; chunks already written are
            # recognised by their producer sequence.
            await self.redis.script_load(SCRIPT)
            results = await self._run_scripts(chunks)
        for r in results:
            if isinstance(r, UNAVAILABLE):
                raise r
        async with self.redis.pipeline(transaction=False) as index_pipe:
            await self._settle_all(chunks, results, index_pipe)

    async def _settle_all(self, chunks: list[Chunk], results: list[Any], index_pipe: Pipeline) -> None:
        index_writes = 0
        verdicts: list[tuple[Chunk, int, int, str]] = []
        rejected: list[tuple[Chunk, Exception]] = []
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, Exception):
                rejected.append((chunk, result))
                continue
            status, seq, info = int(result[0]), int(result[1]), result[2]
            text = info.decode() if isinstance(info, bytes) else str(info)
            if status in (0, 1):
                for offset, item in enumerate(chunk.items):
                    if item.type in _LIFECYCLE:
                        self._index(index_pipe, item, seq + offset if status == 1 else seq)
                        index_writes += 1
            verdicts.append((chunk, status, seq, text))
        if index_writes:
            await index_pipe.execute()
        # Only now are these events done: an outage before this point resends all of them.
        self.outbox.remove([i for c in chunks for i in c.items])
        for chunk, exc in rejected:
            self._reject(chunk.items, exc)
        for chunk, status, seq, text in verdicts:
            self._settle(chunk, status, seq, text)

    async def _run_scripts(self, chunks: list[Chunk]) -> list[Any]:
        head = [self.producer, str(self.stream_maxlen), str(self.retention_s)]
        # `async with`: a pipeline interrupted by cancellation still returns its connection.
        async with self.redis.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                run_id = chunk.run_id
                args = [*head, run_id, str(SCHEMA_VERSION), *chunk.script_args()]
                pipe.evalsha(SCRIPT_SHA, 2, keys.run_events(run_id), keys.run_stats(run_id), *args)  # type: ignore[arg-type]
            return list(await pipe.execute(raise_on_error=False))

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

    def _settle(self, chunk: Chunk, status: int, seq: int, info: str) -> None:
        n = len(chunk.items)
        if status == 1:
            self.published += n
        elif status == 0:
            self.duplicates += n
        item = chunk.items[0]
        fut = item.future  # only single-event chunks carry one
        if status == -1:
            conflict = RunStateConflict(item.run_id, None if info == NO_RUN else info)
            if fut is None:
                log.error("event %s for run %s refused: %s", item.type, item.run_id, conflict)
            elif not fut.done():
                fut.set_exception(conflict)
        elif fut is not None and not fut.done():
            fut.set_result((seq, info))

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
            if item.future is not None and not item.future.done():
                item.future.set_exception(PublishError(f"Redis rejected the event: {exc}"))

    def _expire_waiters(self, chunks: list[Chunk], exc: BaseException) -> list[Chunk]:
        """Awaited publishes past their deadline fail now; fire-and-forget events keep waiting.
        Returns the in-flight chunks that remain (an awaited event is always a chunk alone)."""
        assert self._loop is not None
        now = self._loop.time()
        expired = [i for i in self.outbox.peek_batch(len(self.outbox)) if i.deadline <= now]
        if not expired:
            return chunks
        self.outbox.remove(expired)
        for item in expired:
            if item.future is not None and not item.future.done():
                item.future.set_exception(
                    PublishError(
                        f"Redis unavailable ({type(exc).__name__}: {exc}); {item.type} for run "
                        f"{item.run_id} may not have been written"
                    )
                )
        gone = {id(i) for i in expired}
        return [c for c in chunks if id(c.items[0]) not in gone]
