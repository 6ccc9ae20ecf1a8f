"""Replica acknowledgement: a chunk counts as written only once enough replicas have it.

With `replicas` > 0 the publisher sends WAIT right after its script calls, on the same
connection (one pipeline), and again after the run-index writes. WAIT answers how many replicas
hold everything this connection has written so far; fewer than `replicas` within `timeout_ms`
and the round is not acknowledged: its chunks stay in the outbox and are resent. The script's
producer-sequence check makes the resend exactly-once, on the same primary or on a promoted
replica; a resend it recognises rewrites the producer's mark, so its WAIT covers the first write
even when the pool gives the resend another connection (publish.lua). An event acknowledged to
its producer therefore survives the loss of the primary (docs/deploy.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from redis.asyncio.client import Pipeline

from ..errors import PublishError
from .chunks import Chunk

DEFAULT_TIMEOUT_MS = 500
# The settings' descriptions, the same in each service's config.
REPLICAS_HELP = "Replicas that must acknowledge each write before it counts as published (WAIT; docs/deploy.md)."
TIMEOUT_HELP = "How long one WAIT for the replicas may take; a write not acknowledged in time is resent."


class ReplicaAck(NamedTuple):
    """LIVESTATS_PUBLISH_REPLICAS and LIVESTATS_PUBLISH_REPLICA_TIMEOUT_MS (each service's config)."""

    replicas: int = 0  # 0: acknowledged once the primary has it (no WAIT)
    timeout_ms: int = DEFAULT_TIMEOUT_MS  # how long one WAIT may block the publisher


NO_ACK = ReplicaAck()


class NotReplicated(PublishError):
    """Written on the primary, but fewer replicas than required acknowledged it in time."""


class Acknowledgement:
    """The publisher's side of WAIT: asks for it, judges the answer, counts what failed it."""

    def __init__(self, ack: ReplicaAck) -> None:
        if ack.replicas < 0 or ack.timeout_ms < 1:
            raise ValueError(f"replica acknowledgement needs replicas >= 0 and timeout_ms >= 1, not {ack}")
        self.ack = ack
        self.unreplicated_chunks = 0  # chunks resent because WAIT fell short (a metric)
        # A chunk's script reply from a round that was not acknowledged: when the resend finds it
        # already written, the awaiting producer still gets its seq and id, not the duplicate's.
        self._first_reply: WeakKeyDictionary[Chunk, Any] = WeakKeyDictionary()

    @property
    def on(self) -> bool:
        return self.ack.replicas > 0

    def request(self, pipe: Pipeline) -> None:
        """Append WAIT to `pipe`, after its writes (nothing when acknowledgement is off)."""
        if self.on:
            pipe.wait(self.ack.replicas, self.ack.timeout_ms)

    def script_replies(self, chunks: list[Chunk], replies: list[Any]) -> tuple[list[Any], Any]:
        """Split a script pipeline's replies into the chunks' and WAIT's (None when off). A chunk
        the resend found already written gets the reply of the round that wrote it."""
        if not self.on:
            return replies, None
        results, waited = replies[:-1], replies[-1]
        for i, chunk in enumerate(chunks):
            reply = results[i]
            if isinstance(reply, Exception) or not reply:
                continue
            status = int(reply[0])
            if status == 1:
                self._first_reply[chunk] = reply
            elif status == 0 and chunk in self._first_reply:
                results[i] = self._first_reply[chunk]
        return results, waited

    def confirm(self, waited: Any, chunks: list[Chunk]) -> None:
        """Raise NotReplicated unless WAIT's answer (`waited`) reached the required count."""
        if not self.on:
            return
        if isinstance(waited, Exception) or int(waited) < self.ack.replicas:
            self.unreplicated_chunks += len(chunks)
            got = waited if isinstance(waited, Exception) else f"{int(waited)} of them"
            raise NotReplicated(
                f"{len(chunks)} chunks written on the primary but not acknowledged by "
                f"{self.ack.replicas} replicas within {self.ack.timeout_ms} ms ({got}); resending"
            )
