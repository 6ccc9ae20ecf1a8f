"""The streams the hub reads, and the loop that reads a group of them with one blocking XREAD.

A group is every watched stream on one server, or those of one hash slot on a Cluster
(reader.py says where its reads go). When a stream joins a group whose read is in flight,
CLIENT UNBLOCK interrupts that read so the new stream is read at once instead of after the
block runs out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

from livestats_shared.redis_client import UNAVAILABLE
from redis.exceptions import AskError, MovedError

from ..config import GatewayConfig
from ..ops.background import Backoff
from .reader import ReadTarget, Router
from .stats import FanoutStats
from .subscriber import Subscriber
from .wire import RawEntry

log = logging.getLogger("livestats.gateway.hub")
_UNBLOCK_RETRY_S = 0.002


class Channel:
    """One stream and the subscribers reading it through this process."""

    def __init__(self, run_id: str, stream: str) -> None:
        self.run_id = run_id
        self.run_id_bytes = run_id.encode()
        self.stream = stream
        self.subscribers: set[Subscriber] = set()
        self.position: bytes | None = None  # last entry id read; None until resolved
        self.last_seq: int | None = None  # for the continuity check
        self.resolved: asyncio.Future[None] = asyncio.get_running_loop().create_future()


Deliver = Callable[[Channel, list[RawEntry]], Awaitable[None]]
# After an outage, before reading again: reset the clients of streams that now end before what
# was delivered (a promoted replica without the newest entries; hub.Hub._reset_rewound).
Rewound = Callable[[list[Channel]], Awaitable[None]]


class ReadGroup:
    """The streams one blocking XREAD covers, and the read in flight."""

    def __init__(
        self,
        key: Hashable,
        router: Router,
        config: GatewayConfig,
        stats: FanoutStats,
        deliver: Deliver,
        rewound: Rewound,
    ) -> None:
        self.key = key
        self.channels: dict[str, Channel] = {}  # stream -> channel, once its position is known
        self.connected = True  # False while its reads cannot reach Redis
        self.task: asyncio.Task[None] | None = None
        self._router = router
        self._config = config
        self._stats = stats
        self._deliver = deliver
        self._rewound = rewound
        self._check_ends = False  # after an outage: does any stream now end before its position?
        self._linger_s = config.fanout_linger_ms / 1000
        self._target: ReadTarget | None = None  # where the reads go; None until resolved
        self._generation = 0  # bumped when a stream is added
        self._reading_generation = 0  # generation of the XREAD in flight
        self._in_read = False
        self._wake = asyncio.Event()
        self._unblocking: asyncio.Task[None] | None = None

    # -- a stream joins ----------------------------------------------------------------------

    def stream_added(self) -> None:
        self._generation += 1
        self._wake.set()
        if self._in_read and (self._unblocking is None or self._unblocking.done()):
            self._unblocking = asyncio.create_task(self._unblock(), name="hub-unblock")
            self._unblocking.add_done_callback(_unblock_ended)

    async def _unblock(self) -> None:
        """Interrupt the XREAD so it picks up the new streams now. CLIENT UNBLOCK can arrive
        before the XREAD does (then it unblocks nothing): retry until the reader is reading
        with the current streams."""
        while self._in_read and self._reading_generation < self._generation and self._target is not None:
            if await self._target.unblock():
                return
            await asyncio.sleep(_UNBLOCK_RETRY_S)

    # -- the read loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Read until cancelled, or (on a Cluster) until no stream of the group is watched."""
        backoff = Backoff()
        fresh = False  # after a lost connection: ask who serves the group's slot now
        while True:
            streams = {s: c.position for s, c in self.channels.items() if c.position is not None}
            if not streams:
                if not self._router.permanent:
                    return  # a Cluster slot nobody watches any more: its connection closes
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._target is None:
                    self._target = await self._router.target(self.key, next(iter(streams)), fresh=fresh)
                if self._check_ends:
                    await self._rewound(list(self.channels.values()))
                    self._check_ends = False
                    streams = {s: c.position for s, c in self.channels.items() if c.position is not None}
                reply = await self._read(self._target, streams)
            except AskError as redirect:  # MovedError too: the slot moved, or is moving
                await self._redirect(redirect)
                continue
            except UNAVAILABLE as exc:
                if self.connected or backoff.first_attempt:
                    log.warning("stream reader lost Redis (%s); retrying", exc)
                self.connected = False
                self._check_ends = True  # it may come back as a promoted replica
                await self._lost()
                fresh = True
                await backoff.wait()
                continue
            if not self.connected:
                log.info("stream reader connected")
            self.connected = True
            fresh = False
            backoff.reset()
            self._stats.read()  # one per XREAD, whatever number of streams it answered for
            for raw_stream, entries in reply or ():
                stream = raw_stream.decode()
                channel = self.channels.get(stream)
                # Dropped (or dropped and re-added at another position) while we read: skip.
                if channel is None or channel.position != streams[stream]:
                    continue
                await self._deliver(channel, entries)
            if reply and self._linger_s:
                # Let the next few events gather in Redis: one frame per client for several
                # events instead of one each, which is what saturates a busy gateway's CPU.
                # A fixed pause costs a quiet stream nothing (its next event comes after the
                # pause is over); scaling it with the last read's size did worse (commit 2d1b378).
                await asyncio.sleep(self._linger_s)

    async def _read(self, target: ReadTarget, streams: dict[str, bytes]) -> list[tuple[bytes, list[RawEntry]]]:
        await target.prepare()
        self._reading_generation = self._generation
        self._in_read = True
        try:
            reply: list[tuple[bytes, list[RawEntry]]] = await target.read(
                streams, self._config.read_count, self._config.read_block_ms
            )
        finally:
            self._in_read = False
        return reply

    async def _redirect(self, redirect: AskError) -> None:
        """Read where the Cluster said the slot now is (MOVED) or is being moved to (ASK: each
        read there is preceded by ASKING until a MOVED settles it)."""
        asking = not isinstance(redirect, MovedError)
        moving = "moving" if asking else "moved"
        log.info("stream reader: slot %s %s to %s", redirect.slot_id, moving, redirect.node_addr)
        self._stats.redirect()
        await self.close()
        self._target = self._router.redirected((redirect.host, int(redirect.port)), asking=asking)

    async def _lost(self) -> None:
        if self._target is None:
            return
        if self._router.permanent:
            self._target.lost()  # one server: the same client reconnects, with another CLIENT ID
            return
        await self.close()  # a Cluster: ask again who serves the slot (a replica promoted?)

    async def close(self) -> None:
        """Close the group's connection (a Cluster group's; one server's reader is the hub's)."""
        target, self._target = self._target, None  # unblockers see no target from here on
        if self._unblocking is not None:
            self._unblocking.cancel()
        if target is not None:
            await target.close()


def _unblock_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The reader still sees the stream when its block times out; say why it was late.
        log.warning("could not interrupt the reader for a new stream: %r", task.exception())
