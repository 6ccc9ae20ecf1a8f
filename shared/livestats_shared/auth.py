"""Principals and API tokens: who may read and steer which run.

A token reads `lsk_<id>_<secret>`. The id (12 hex characters) names the token in listings and
for revocation; the secret is 32 random bytes and is shown once, when the token is created.
Only SHA-256 of the whole token is stored. A fast hash is enough here because the token carries
256 random bits (there is no dictionary to try, unlike a password), and it is checked on every
request; a deliberately slow hash would only slow every request down.

A token may carry an expiry (`expires_ms`); past it, the token is refused exactly like a revoked
one. Each gateway process records when a token was last used (at most once a minute per token).

Scopes nest: `admin` includes `submit`, which includes `read`. A principal sees the runs it
submitted and the runs shared with one of its teams; `admin` sees and steers every run.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys
from .cluster import atomically
from .errors import LivestatsError
from .ids import NAME_PATTERN
from .redis_client import UNAVAILABLE
from .token_file import WatchedTokenFile

log = logging.getLogger("livestats.auth")

TOKEN_PREFIX = "lsk_"
# The id of the gateway's LIVESTATS_GATEWAY_ADMIN_TOKEN. A process cannot see its environment
# change, so that token changes (or goes) by restarting the gateway; `livestats token revoke`
# refuses this id and says so.
SETTINGS_TOKEN_ID = "settings"
_TOKEN = re.compile(r"lsk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


class Scope(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"


_INCLUDES: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.SUBMIT: frozenset({Scope.READ, Scope.SUBMIT}),
    Scope.ADMIN: frozenset(Scope),
}


class InvalidTokenFile(LivestatsError):
    pass


class Principal(BaseModel):
    """Who is asking: a name, what it may do, and the teams whose runs it also sees."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    scopes: frozenset[Scope]
    teams: frozenset[str] = frozenset()

    def has(self, scope: Scope) -> bool:
        return any(scope in _INCLUDES[s] for s in self.scopes)

    def can_see(self, owner: str | None, team: str | None) -> bool:
        """A run without an owner (made before auth, or by an operator tool) is admin-only."""
        if self.has(Scope.ADMIN):
            return True
        return owner is not None and (owner == self.name or (team is not None and team in self.teams))


class TokenRecord(BaseModel):
    """What is stored for a token: never the token itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # 12 hex characters (`settings` for the gateway's admin token); part of Redis key names.
    id: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    digest: str  # hex SHA-256 of the whole token
    principal: str = Field(pattern=NAME_PATTERN)
    scopes: frozenset[Scope] = Field(min_length=1)
    teams: frozenset[str] = frozenset()
    created_ms: int = 0
    note: str = Field("", max_length=200)
    # Epoch ms after which the token is refused like a revoked one; None: until revoked.
    expires_ms: int | None = Field(None, ge=0)

    def as_principal(self) -> Principal:
        return Principal(name=self.principal, scopes=self.scopes, teams=self.teams)

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and now_ms >= self.expires_ms


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str | None:
    """The id inside a well-formed token, else None (the caller says "invalid token")."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else None


def now_ms() -> int:
    return int(time.time() * 1000)


def new_token(
    principal: str,
    scopes: Iterable[Scope],
    teams: Iterable[str] = (),
    note: str = "",
    *,
    expires_in_s: float | None = None,
) -> tuple[TokenRecord, str]:
    """A fresh token and the record to store for it, valid for `expires_in_s` seconds (None:
    until revoked). Raises pydantic's ValidationError for a bad name, scope list or expiry."""
    tid = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
    created = now_ms()
    record = TokenRecord(
        id=tid,
        digest=digest(token),
        principal=principal,
        scopes=frozenset(scopes),
        teams=frozenset(teams),
        created_ms=created,
        note=note,
        expires_ms=None if expires_in_s is None else created + int(expires_in_s * 1000),
    )
    return record, token


def load_token_file(path: Path) -> list[TokenRecord]:
    """Records from a JSON file `{"tokens": [record, ...]}` (what `livestats token create --file`
    writes). A missing file is an empty list; a malformed one raises InvalidTokenFile."""
    if not path.exists():
        return []
    try:
        body = orjson.loads(path.read_bytes())
        return [TokenRecord.model_validate(r) for r in body["tokens"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
        raise InvalidTokenFile(f"{path}: not a livestats token file ({type(exc).__name__}: {exc})") from exc


def save_token_file(path: Path, records: Iterable[TokenRecord]) -> None:
    body = {"tokens": [r.model_dump(mode="json") for r in records]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: a gateway reading it never sees half a file


_RECENT_MAX = 10_000  # remembered lookups


class _FixedRecords:
    def __init__(self, records: Iterable[TokenRecord]) -> None:
        self.by_digest = {r.digest: r for r in records}
        self.by_id = {r.id: r for r in self.by_digest.values()}


class TokenStore:
    """Tokens kept in Redis (created and revoked at run time by `livestats token`) plus fixed
    records (from settings) and the records of a token file, re-read whenever the file changes.

    Every answer re-checks the expiry, so a token expires on time even where an answer is reused.
    """

    def __init__(self, redis: Redis, fixed: Iterable[TokenRecord] = (), token_file: Path | None = None) -> None:
        self.redis = redis
        self._settings = tuple(fixed)
        self._file = WatchedTokenFile(token_file, load_token_file) if token_file is not None else None
        # Answers of recent Redis lookups, for callers that accept a bounded staleness (open
        # streams re-checking their token): one lookup per token, not per connection.
        self._recent: dict[str, tuple[float, TokenRecord | None]] = {}
        self._used: dict[str, float] = {}  # token id -> when this process last wrote its last-used
        self._fixed_from: tuple[TokenRecord, ...] | None = None
        self._fixed_records = _FixedRecords(self._settings)

    def _fixed(self) -> _FixedRecords:
        """Settings' records and the token file's current ones (re-read if it changed)."""
        current = self._file.records() if self._file is not None else ()
        if current is not self._fixed_from:
            self._fixed_from = current
            self._fixed_records = _FixedRecords([*self._settings, *current])
        return self._fixed_records

    async def create(
        self,
        principal: str,
        scopes: Iterable[Scope],
        teams: Iterable[str] = (),
        note: str = "",
        *,
        expires_in_s: float | None = None,
    ) -> tuple[TokenRecord, str]:
        record, token = new_token(principal, scopes, teams, note, expires_in_s=expires_in_s)
        await self.save(record)
        return record, token

    async def save(self, record: TokenRecord) -> None:
        """Store (or replace: a renewed expiry) a Redis token's record."""
        await cast(Awaitable[int], self.redis.hset(keys.AUTH_TOKENS, record.id, record.model_dump_json()))

    async def revoke(self, tid: str) -> bool:
        """Delete a Redis token and end every browser session opened with it. True if a token
        with this id existed in Redis."""
        existed = bool(await cast(Awaitable[int], self.redis.hdel(keys.AUTH_TOKENS, tid)))
        await end_sessions_of(self.redis, tid)
        await cast(Awaitable[int], self.redis.hdel(keys.AUTH_TOKENS_LAST_USED, tid))
        return existed

    async def list(self) -> list[TokenRecord]:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(keys.AUTH_TOKENS))
        stored = [TokenRecord.model_validate_json(v) for v in raw.values()]
        return sorted([*self._fixed().by_id.values(), *stored], key=lambda r: (r.principal, r.created_ms))

    async def last_used(self) -> dict[str, int]:
        """Token id -> epoch ms of its last recorded use (by any gateway process)."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(keys.AUTH_TOKENS_LAST_USED))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def verify(self, token: str, *, max_age_s: float = 0.0) -> Principal | None:
        """The token's principal, or None for an unknown, revoked, expired or malformed token.
        With `max_age_s`, an answer looked up at most that long ago may be reused."""
        record = await self.verify_record(token, max_age_s=max_age_s)
        return None if record is None else record.as_principal()

    async def verify_record(self, token: str, *, max_age_s: float = 0.0) -> TokenRecord | None:
        """The token's record (see `verify`); notes the use for `last_used`."""
        presented = digest(token)
        record = self._fixed().by_digest.get(presented)
        if record is None:
            record = await self._lookup_cached(token, presented, max_age_s)
        if record is None or record.expired(now_ms()):
            return None
        await self.note_used(record)
        return record

    async def record_by_id(self, tid: str, *, max_age_s: float = 0.0) -> TokenRecord | None:
        """The current, unexpired record of token `tid` (how a session re-checks its token)."""
        record = self._fixed().by_id.get(tid)
        if record is None:
            record = await self._lookup_cached(None, tid, max_age_s)
        return None if record is None or record.expired(now_ms()) else record

    async def _lookup_cached(self, token: str | None, cache_key: str, max_age_s: float) -> TokenRecord | None:
        now = time.monotonic()
        recent = self._recent.get(cache_key)
        if recent is not None and now - recent[0] <= max_age_s:
            return recent[1]
        record = await (self._lookup(token, cache_key) if token is not None else self._by_id(cache_key))
        if len(self._recent) >= _RECENT_MAX:
            self._recent.clear()  # crude but bounded; the next round of re-checks refills it
        self._recent[cache_key] = (now, record)
        return record

    async def _by_id(self, tid: str) -> TokenRecord | None:
        raw = await cast(Awaitable[bytes | None], self.redis.hget(keys.AUTH_TOKENS, tid))
        return None if raw is None else TokenRecord.model_validate_json(raw)

    async def _lookup(self, token: str, presented: str) -> TokenRecord | None:
        tid = token_id(token)
        if tid is None:
            return None
        record = await self._by_id(tid)
        # Constant-time: the stored digest must not leak through response timing.
        return record if record is not None and hmac.compare_digest(record.digest, presented) else None

    async def note_used(self, record: TokenRecord) -> None:
        """Record the use, at most once per TOKEN_LAST_USED_EVERY_S per token in this process."""
        now = time.monotonic()
        last = self._used.get(record.id)
        if last is not None and now - last < keys.TOKEN_LAST_USED_EVERY_S:
            return
        if len(self._used) >= _RECENT_MAX:
            self._used.clear()
        self._used[record.id] = now
        try:
            await cast(Awaitable[int], self.redis.hset(keys.AUTH_TOKENS_LAST_USED, record.id, str(now_ms())))
        except UNAVAILABLE as exc:
            # A settings or file token works without Redis; its last-used time waits for Redis.
            del self._used[record.id]
            log.info("last-used time of token %s not recorded, Redis unavailable: %s", record.id, exc)


async def end_sessions_of(redis: Redis, tid: str) -> None:
    """Delete every browser session opened with token `tid` (see keys.auth_token_sessions)."""
    index = keys.auth_token_sessions(tid)
    members = await cast(Awaitable[set[bytes]], redis.smembers(index))

    def delete(pipe: Pipeline) -> None:
        for member in members:
            pipe.delete(keys.auth_session(member.decode()))
        pipe.delete(index)

    await atomically(redis, index, delete)
