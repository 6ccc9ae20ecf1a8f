"""What `livestats up` (make run) keeps secret on this machine.

- The embedded server's password: generated once, kept in `<data dir>/redis-password` (mode
  0600), handed to the worker and gateway in their Redis URL (an environment variable, which
  other users cannot read), and to `redis-cli` recipes as `REDISCLI_AUTH` (never on a command
  line, which any local user can read in `ps`). Other local users can then no longer write to
  the server (an admin token record, say).
- The local admin token behind the printed login URL: it expires LOCAL_TOKEN_TTL_S after its
  last renewal, and `up` renews it every third of that while it lives, so a SIGKILLed `up`
  (which cannot revoke it) leaves a token valid for at most that long.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

from livestats_shared.auth import Scope, TokenRecord, TokenStore, now_ms
from livestats_shared.redis_client import UNAVAILABLE, connect

log = logging.getLogger("livestats.cli")
PASSWORD_FILE = "redis-password"
LOCAL_TOKEN_TTL_S = 15 * 60  # seconds a local admin token outlives its last renewal


def password_path(data_dir: Path) -> Path:
    return data_dir / PASSWORD_FILE


def read_password(data_dir: Path) -> str | None:
    """The embedded server's password, if `up` has made one for this data dir."""
    try:
        return password_path(data_dir).read_text().strip() or None
    except FileNotFoundError:
        return None


def load_or_create_password(data_dir: Path) -> str:
    """The data dir's password, made (256 random bits, mode 0600) the first time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = password_path(data_dir)
    existing = read_password(data_dir)
    if existing is not None:
        path.chmod(0o600)  # tighten a copy someone loosened
        return existing
    password = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    tmp.replace(path)
    return password


def local_url(port: int, password: str | None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


async def create_local_token(url: str, principal: str, ttl_s: float = LOCAL_TOKEN_TTL_S) -> tuple[TokenRecord, str]:
    redis = connect(url, "livestats.cli")
    try:
        return await TokenStore(redis).create(
            principal, [Scope.ADMIN], note="livestats up session (renewed while it runs)", expires_in_s=ttl_s
        )
    finally:
        await redis.aclose()


async def keep_renewing(url: str, record: TokenRecord, ttl_s: float = LOCAL_TOKEN_TTL_S) -> None:
    """Push the token's expiry ttl_s ahead, every ttl_s / 3, until cancelled. An outage skips a
    renewal (the next one catches up before the token expires, unless the outage outlasts it)."""
    redis = connect(url, "livestats.cli")
    store = TokenStore(redis)
    try:
        while True:
            await asyncio.sleep(ttl_s / 3)
            try:
                await store.save(record.model_copy(update={"expires_ms": now_ms() + int(ttl_s * 1000)}))
            except UNAVAILABLE as exc:
                log.warning("local admin token %s not renewed this time (Redis unavailable: %s)", record.id, exc)
    finally:
        await redis.aclose()


def renewal_stopped(task: asyncio.Task[None]) -> None:
    """Done callback: a renewal loop that ends other than by cancellation says so."""
    if not task.cancelled() and task.exception() is not None:
        print(
            f"warning: the local admin token is no longer renewed ({task.exception()!r}); the login URL stops "
            "working when it expires",
            file=sys.stderr,
        )


async def revoke_local_token(url: str, token_id: str) -> None:
    redis = connect(url, "livestats.cli")
    try:
        await TokenStore(redis).revoke(token_id)
    except UNAVAILABLE as exc:
        print(
            f"could not revoke the session token {token_id} ({exc}); it expires by itself within "
            f"{LOCAL_TOKEN_TTL_S // 60} minutes, or run `livestats token revoke {token_id}`"
        )
    finally:
        await redis.aclose()
