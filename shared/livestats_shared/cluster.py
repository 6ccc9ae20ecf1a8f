"""Redis Cluster: the `redis+cluster://` client, and what a Cluster needs beyond one server.

    redis+cluster://[user:password@]host:port[,host:port...][?option=value...]
    rediss+cluster://...                                  (TLS; options as for rediss://)

Every listed node is a startup node: the client asks the first that answers for the slot map.
On a Cluster, every key of one command (and of one MULTI/EXEC) must hash to one slot: each
run's keys share a hash tag (keys.py), and the few transactions go through `atomically`,
which sends them to the node that holds the slot (redis-py 5's cluster pipeline has no
transactions). A blocking reader gets a dedicated connection to one node (`dedicated_client`)
and finds the slot's current owner itself (`slot_owner`) after MOVED or a lost node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ClusterError, ConnectionError, MovedError, RedisClusterException, TimeoutError

from .errors import InvalidRedisUrl

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
Address = tuple[str, int]
_REDIRECTS = 5  # MOVED answers one transaction follows before giving up (a slot moving twice)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES


def parse_cluster_url(url: str) -> tuple[list[Address], dict[str, Any]]:
    """(startup nodes, client options) of a `redis+cluster://` URL. Options are read as redis-py
    reads a single-server URL (credentials, TLS, query options); a database other than 0 is
    refused: a Cluster has only one."""
    scheme, _, rest = url.partition("://")
    if scheme not in SCHEMES:
        raise InvalidRedisUrl(f"not a Redis Cluster URL (redis+cluster://host:port,...): {scheme}://...")
    parts = urlsplit(f"{SCHEMES[scheme]}://{rest}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    nodes: list[Address] = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidRedisUrl(f"Redis Cluster URL: {item.strip()!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    single = parts._replace(netloc=f"{credentials}@{hosts.split(',')[0]}" if credentials else hosts.split(",")[0])
    options: dict[str, Any] = dict(parse_url(single.geturl()))
    for name in ("host", "port"):
        options.pop(name, None)
    if options.pop("db", 0):
        raise InvalidRedisUrl("Redis Cluster URL: a Cluster has only database 0")
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return nodes, options


class ClusterClient(RedisCluster):
    """redis-py's RedisCluster, plus a plain client per node (for transactions, CLIENT UNBLOCK
    and slot lookups) and an outage that reads as one.

    redis-py raises RedisClusterException (not a connection error) when no startup node answers
    or the slots are not all served, which is what a Cluster looks like in the middle of a
    failover: `initialize` raises ConnectionError instead, so every caller's "Redis is away,
    retry" path covers it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node_clients: dict[Address, Redis] = {}

    async def initialize(self) -> ClusterClient:
        try:
            await super().initialize()
        except RedisClusterException as exc:
            raise ConnectionError(f"Redis Cluster unavailable: {exc}") from exc
        return self

    async def aclose(self) -> None:
        # redis-py also calls aclose() to force a new slot map after a node error: the node
        # clients are disconnected then as well, and reconnect on their next command.
        await super().aclose()
        for client in self._node_clients.values():
            await client.connection_pool.disconnect()

    def node_client(self, address: Address) -> Redis:
        """A pooled plain client to one node, with this client's options (kept; see aclose)."""
        client = self._node_clients.get(address)
        if client is None:
            client = self._node_clients[address] = Redis(connection_pool=self._pool(address))
        return client

    def dedicated_client(self, address: Address, client_name: str) -> Redis:
        """A client with one connection of its own to `address` (a blocking reader's: a cancelled
        XREAD must never go back to a shared pool). The caller closes it."""
        client = Redis(connection_pool=self._pool(address, client_name), single_connection_client=True)
        client.auto_close_connection_pool = True
        return client

    def _pool(self, address: Address, client_name: str | None = None) -> ConnectionPool:
        options: dict[str, Any] = dict(self.get_connection_kwargs())
        options.pop("response_callbacks", None)  # a Redis client sets its own
        if client_name is not None:
            options["client_name"] = client_name
        host, port = address
        return ConnectionPool(host=host, port=port, **options)

    async def owner(self, key: str) -> Address:
        """The node serving `key`'s slot, as this client's slot map says (it may be stale: a
        caller that gets MOVED follows it, and one that loses the node asks `slot_owner`)."""
        await self.initialize()
        node = cast(ClusterNode, self.get_node_from_key(key))
        return node.host, int(node.port)

    async def slot_owner(self, slot: int) -> Address:
        """The primary serving `slot` now, as the first known node that answers says (CLUSTER
        SLOTS): after a failover the promoted replica, not the client's stale map. Raises
        ConnectionError when no node answers or none serves the slot yet."""
        await self.initialize()
        error: Exception | None = None
        for node in self.get_nodes():
            try:
                client = self.node_client((node.host, int(node.port)))
                ranges = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            except (ConnectionError, TimeoutError, OSError) as exc:
                error = exc
                continue
            for low, high, primary, *_ in ranges:
                if int(low) <= slot <= int(high):
                    host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
                    return host or node.host, int(primary[1])
        raise ConnectionError(f"no node of the Redis Cluster says who serves slot {slot} (last error: {error})")


def connect_cluster(url: str, options: dict[str, Any]) -> Redis:
    """A ClusterClient for `url` with `options` (client name, timeouts). Typed as Redis: it
    answers the same command methods the callers use; what differs on a Cluster (transactions,
    blocking reads, CLIENT commands) goes through this module (see `cluster_of`)."""
    nodes, url_options = parse_cluster_url(url)
    startup = [ClusterNode(host, port) for host, port in nodes]
    # mypy sees RedisCluster's `connection_pool` as abstract (a single-server attribute it lacks).
    client = ClusterClient(startup_nodes=startup, **{**options, **url_options})  # type: ignore[abstract]
    return cast(Redis, client)


def cluster_of(client: Redis) -> ClusterClient | None:
    """The client as a ClusterClient, or None for a single server (or Sentinel primary)."""
    candidate: object = client
    return candidate if isinstance(candidate, ClusterClient) else None


async def atomically(redis: Redis, key: str, build: Callable[[Pipeline], object]) -> list[Any]:
    """The commands `build` queues, run as one MULTI/EXEC; returns their replies. On a Cluster it
    runs on the node serving `key`'s slot, and every key the commands touch must share that slot
    (one hash tag); a MOVED answer (the slot was resharded) is followed."""
    cluster = cluster_of(redis)
    if cluster is None:
        async with redis.pipeline(transaction=True) as pipe:
            build(pipe)
            return await pipe.execute()
    address = await cluster.owner(key)
    for _ in range(_REDIRECTS):
        async with cluster.node_client(address).pipeline(transaction=True) as pipe:
            build(pipe)
            try:
                return await pipe.execute()
            except MovedError as moved:
                address = (moved.host, int(moved.port))
    raise ClusterError(f"a transaction on {key!r} was redirected {_REDIRECTS} times: the slot keeps moving")
