"""`redis+sentinel://` URLs: a primary that Sentinels manage, found again after a failover.

    redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/<db>]

The hosts are Sentinels (port 26379 if left out); `service` is the name they monitor the primary
under (`sentinel monitor <service> ...`). The credentials are the primary's (and so its
replicas'); the Sentinels are asked without any. Each new connection asks a Sentinel where the
primary is, so after a failover a reconnect reaches the promoted replica, and a connection left
on a demoted primary fails its next write (READONLY becomes a ConnectionError) and reconnects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from redis.asyncio import Redis

from .compat import SentinelPool, StableSentinel, UnpolledSentinelPool
from .errors import LivestatsError

SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379

R = TypeVar("R", bound=Redis)


class InvalidSentinelUrl(LivestatsError, ValueError):
    pass


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME)


def parse(url: str) -> SentinelUrl:
    """The parts of a `redis+sentinel://` URL; InvalidSentinelUrl says what is wrong with one."""
    if not is_sentinel_url(url):
        raise InvalidSentinelUrl(f"not a {SCHEME} URL")
    rest = url[len(SCHEME) :]
    if "?" in rest or "#" in rest:
        raise InvalidSentinelUrl(f"{SCHEME} URLs take no query or fragment (options are not supported)")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    username = password = None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    parts = [p for p in path.split("/") if p]
    if not 1 <= len(parts) <= 2:
        raise InvalidSentinelUrl(f"{SCHEME} URLs end in /<service> or /<service>/<db>, the name the Sentinels monitor")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise InvalidSentinelUrl(f"database {parts[1]!r} is not a number")
        db = int(parts[1])
    return SentinelUrl(tuple(_address(h) for h in hosts.split(",")), unquote(parts[0]), db, username, password)


def _address(text: str) -> tuple[str, int]:
    host, port = text, str(DEFAULT_SENTINEL_PORT)
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        if tail:
            port = tail.removeprefix(":")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidSentinelUrl(f"{text!r} is not a Sentinel host:port")
    return host, int(port)


def primary_client(
    url: str,
    options: dict[str, Any],
    *,
    single_connection: bool = False,
    busy_loop: bool = False,
    redis_class: type[R] = Redis,  # type: ignore[assignment]  # the default is an R when none is given
) -> R:
    """A `redis_class` client of the primary named by `url`, with connection `options` (client
    name, timeouts, retries). `single_connection` and `busy_loop` as in `redis_client.connect`."""
    parsed = parse(url)
    sentinel_options = {k: v for k, v in options.items() if k in ("socket_connect_timeout", "client_name")}
    sentinel = StableSentinel(parsed.sentinels, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: R = sentinel.master_for(
        parsed.service,
        redis_class=redis_class,
        connection_pool_class=UnpolledSentinelPool if busy_loop else SentinelPool,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )
    if single_connection:
        client = redis_class(connection_pool=client.connection_pool, single_connection_client=True)
        client.auto_close_connection_pool = True  # aclose() closes the pool, as master_for's client does
    return client
