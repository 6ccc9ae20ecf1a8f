"""A leader lease in Redis: at most one holder at a time, known by a random token.

One script takes a free lease (SET NX PX) or extends our own; release deletes it only if it
is still ours. Both compare the token inside Redis, so a holder whose lease lapsed (a long
pause) and was taken meanwhile can neither extend nor delete its successor's lease.

A lease keeps work on one process in the normal case; it is not enough for exactly-once: an old
holder paused past its TTL overlaps with the new one. Acting once needs an atomic guard too.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from redis.asyncio import Redis

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, redis: Redis, key: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1, ttl_ms)
        # Host and pid first, so `GET <key>` tells an operator which process leads.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._valid_until = 0.0  # monotonic; measured from before the request, so never late
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    @property
    def held(self) -> bool:
        """We hold the lease now (as far as this process can know)."""
        return time.monotonic() < self._valid_until

    async def acquire_or_renew(self) -> bool:
        """Extend the lease if it is ours, take it if it is free. True while we hold it.
        Raises Redis errors; after one, the lease counts as not held."""
        sent = time.monotonic()
        acquired = False
        try:
            acquired = bool(await self._acquire(keys=[self.key], args=[self.token, self.ttl_ms]))
        finally:
            # Still held while the renewal is on its way; after a refusal, an error or a
            # cancellation we cannot know, so not held.
            self._valid_until = sent + self.ttl_ms / 1000 if acquired else 0.0
        return self.held

    async def release(self) -> None:
        """Give the lease up if it is still ours, so a successor need not wait out the TTL."""
        self._valid_until = 0.0
        # Asked even when we think we do not hold it: a request whose reply was lost may have won.
        await self._release(keys=[self.key], args=[self.token])
