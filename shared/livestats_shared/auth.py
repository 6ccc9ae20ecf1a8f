"""Principals and API tokens: who may read and steer which run.

A token reads `lsk_<id>_<secret>`. The id (12 hex characters) names the token in listings and
for revocation; the secret is 32 random bytes and is shown once, when the token is created.
Only SHA-256 of the whole token is stored. A fast hash is enough here because the token carries
256 random bits (there is no dictionary to try, unlike a password), and it is checked on every
request; a deliberately slow hash would only slow every request down.

Scopes nest: `admin` includes `submit`, which includes `read`. A principal sees the runs it
submitted and the runs shared with one of its teams; `admin` sees and steers every run.
"""

from __future__ import annotations

import hashlib
import hmac
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

from . import keys
from .errors import LivestatsError
from .ids import NAME_PATTERN

TOKEN_PREFIX = "lsk_"
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
    id: str
    digest: str  # hex SHA-256 of the whole token
    principal: str = Field(pattern=NAME_PATTERN)
    scopes: frozenset[Scope] = Field(min_length=1)
    teams: frozenset[str] = frozenset()
    created_ms: int = 0
    note: str = Field("", max_length=200)

    def as_principal(self) -> Principal:
        return Principal(name=self.principal, scopes=self.scopes, teams=self.teams)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str | None:
    """The id inside a well-formed token, else None (the caller says "invalid token")."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else None


def new_token(
    principal: str, scopes: Iterable[Scope], teams: Iterable[str] = (), note: str = ""
) -> tuple[TokenRecord, str]:
    """A fresh token and the record to store for it. Raises pydantic's ValidationError for a bad
    name or scope list."""
    tid = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(
        id=tid,
        digest=digest(token),
        principal=principal,
        scopes=frozenset(scopes),
        teams=frozenset(teams),
        created_ms=int(time.time() * 1000),
        note=note,
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


class TokenStore:
    """Tokens kept in Redis (created and revoked at run time by `livestats token`) plus fixed
    records from settings or a file (read once at start)."""

    def __init__(self, redis: Redis, fixed: Iterable[TokenRecord] = ()) -> None:
        self.redis = redis
        self._fixed = {r.digest: r for r in fixed}
        # Answers of recent Redis lookups, for callers that accept a bounded staleness (open
        # streams re-checking their token): one lookup per token, not per connection.
        self._recent: dict[str, tuple[float, Principal | None]] = {}

    async def create(
        self, principal: str, scopes: Iterable[Scope], teams: Iterable[str] = (), note: str = ""
    ) -> tuple[TokenRecord, str]:
        record, token = new_token(principal, scopes, teams, note)
        await cast(Awaitable[int], self.redis.hset(keys.AUTH_TOKENS, record.id, record.model_dump_json()))
        return record, token

    async def revoke(self, tid: str) -> bool:
        """True if a token with this id existed in Redis."""
        return bool(await cast(Awaitable[int], self.redis.hdel(keys.AUTH_TOKENS, tid)))

    async def list(self) -> list[TokenRecord]:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(keys.AUTH_TOKENS))
        stored = [TokenRecord.model_validate_json(v) for v in raw.values()]
        return sorted([*self._fixed.values(), *stored], key=lambda r: (r.principal, r.created_ms))

    async def verify(self, token: str, *, max_age_s: float = 0.0) -> Principal | None:
        """The token's principal, or None for an unknown, revoked or malformed token. With
        `max_age_s`, an answer looked up at most that long ago may be reused."""
        presented = digest(token)
        fixed = self._fixed.get(presented)
        if fixed is not None:
            return fixed.as_principal()
        now = time.monotonic()
        recent = self._recent.get(presented)
        if recent is not None and now - recent[0] <= max_age_s:
            return recent[1]
        principal = await self._lookup(token, presented)
        if len(self._recent) >= _RECENT_MAX:
            self._recent.clear()  # crude but bounded; the next round of re-checks refills it
        self._recent[presented] = (now, principal)
        return principal

    async def _lookup(self, token: str, presented: str) -> Principal | None:
        tid = token_id(token)
        if tid is None:
            return None
        raw = await cast(Awaitable[bytes | None], self.redis.hget(keys.AUTH_TOKENS, tid))
        if raw is None:
            return None
        record = TokenRecord.model_validate_json(raw)
        # Constant-time: the stored digest must not leak through response timing.
        return record.as_principal() if hmac.compare_digest(record.digest, presented) else None
