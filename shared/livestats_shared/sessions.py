"""Browser sessions: an opaque random id in the cookie, the rest in Redis.

The cookie never holds an API token: a session id is 256 random bits, issued at login, and
worth nothing once the session ends. Redis keeps only its SHA-256 (a copy of the database holds
no usable cookie), with the token's id and digest, so a session lives no longer than its token:
every lookup re-checks the token (revoked, expired, a token file that dropped it, an admin token
that changed), and revoking a token through `TokenStore.revoke` deletes its sessions at once.

Two expiries: idle (the key's TTL, renewed on use at most once a minute per gateway process) and
absolute (`expires_ms`, fixed at login; the TTL never reaches past it).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys
from .auth import Principal, TokenRecord, TokenStore, digest, now_ms
from .cluster import atomically

_RECENT_MAX = 10_000  # sessions whose last touch or lookup this process remembers


@dataclass(frozen=True)
class Session:
    principal: Principal
    token_id: str


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


class SessionStore:
    def __init__(self, redis: Redis, tokens: TokenStore, *, idle_s: float, max_s: float) -> None:
        self.redis = redis
        self.tokens = tokens
        self.idle_ms = int(idle_s * 1000)
        self.max_ms = int(max_s * 1000)
        self._touched: dict[str, float] = {}  # session digest -> monotonic time of the last renewal
        self._recent: dict[str, tuple[float, dict[bytes, bytes]]] = {}  # for re-checks of open streams

    async def create(self, record: TokenRecord) -> str:
        """A new session for a verified token; returns its id (for the cookie, nowhere else)."""
        sid = new_session_id()
        key_digest = digest(sid)
        now = now_ms()
        # Not capped at the token's expiry: that can be renewed (`livestats up` does), and every
        # lookup re-checks the token, so the session ends with it all the same.
        expires = now + self.max_ms
        index = keys.auth_token_sessions(record.id)

        def write(pipe: Pipeline) -> None:
            pipe.hset(
                keys.auth_session(key_digest),
                mapping={
                    "token_id": record.id,
                    "token_digest": record.digest,
                    "principal": record.principal,
                    "created_ms": now,
                    "expires_ms": expires,
                },
            )
            pipe.pexpire(keys.auth_session(key_digest), max(1, min(self.idle_ms, expires - now)))
            pipe.sadd(index, key_digest)
            pipe.pexpire(index, self.max_ms, gt=True)  # the index outlives its longest session
            pipe.pexpire(index, self.max_ms, nx=True)

        await atomically(self.redis, index, write)
        self._touched[key_digest] = time.monotonic()
        return sid

    async def resolve(self, sid: str, *, max_age_s: float = 0.0) -> Session | None:
        """The live session behind a cookie, or None (unknown, ended, expired, or its token no
        longer valid). With `max_age_s`, a lookup that recent may be reused."""
        key_digest = digest(sid)
        fields = await self._fields(key_digest, max_age_s)
        if not fields:
            return None
        try:
            token_id = fields[b"token_id"].decode()
            token_digest = fields[b"token_digest"].decode()
            expires = int(fields[b"expires_ms"])
        except (KeyError, ValueError):
            return None  # not a hash this module wrote
        now = now_ms()
        record = await self.tokens.record_by_id(token_id, max_age_s=max_age_s)
        if now >= expires or record is None or record.digest != token_digest:
            await self._delete(key_digest, token_id)
            return None
        await self._touch(key_digest, expires - now)
        await self.tokens.note_used(record)
        return Session(record.as_principal(), token_id)

    async def end(self, sid: str) -> None:
        """Log out: the session is gone for every gateway at once."""
        key_digest = digest(sid)
        raw = await cast(Awaitable[bytes | None], self.redis.hget(keys.auth_session(key_digest), "token_id"))
        await self._delete(key_digest, None if raw is None else raw.decode())

    async def _fields(self, key_digest: str, max_age_s: float) -> dict[bytes, bytes]:
        now = time.monotonic()
        recent = self._recent.get(key_digest)
        if recent is not None and now - recent[0] <= max_age_s:
            return recent[1]
        fields = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(keys.auth_session(key_digest)))
        if len(self._recent) >= _RECENT_MAX:
            self._recent.clear()
        self._recent[key_digest] = (now, fields)
        return fields

    async def _touch(self, key_digest: str, left_ms: int) -> None:
        """Renew the idle expiry, at most once per SESSION_TOUCH_EVERY_S in this process."""
        now = time.monotonic()
        last = self._touched.get(key_digest)
        if last is not None and now - last < keys.SESSION_TOUCH_EVERY_S:
            return
        if len(self._touched) >= _RECENT_MAX:
            self._touched.clear()
        self._touched[key_digest] = now
        # XX-like: PEXPIRE on a key that ended meanwhile does nothing (it does not recreate it).
        await self.redis.pexpire(keys.auth_session(key_digest), max(1, min(self.idle_ms, left_ms)))

    async def _delete(self, key_digest: str, token_id: str | None) -> None:
        self._recent.pop(key_digest, None)
        self._touched.pop(key_digest, None)

        def delete(pipe: Pipeline) -> None:
            pipe.delete(keys.auth_session(key_digest))
            if token_id is not None:
                pipe.srem(keys.auth_token_sessions(token_id), key_digest)

        await atomically(self.redis, keys.auth_session(key_digest), delete)
