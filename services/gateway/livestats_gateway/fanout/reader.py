"""Where the shared reader's blocking XREADs go: one read per *group* of watched streams.

On one server (or a Sentinel primary) every stream is in one group, read on one connection:
one XREAD for all of them. On a Cluster an XREAD may name keys of one hash slot only, so each
slot with watched streams is a group of its own (with layout v2's partitions, at most P),
read on a dedicated connection to the node serving the slot. That connection follows the slot:
MOVED (resharded: read there from now on), ASK (mid-migration: ASKING, then read there), a lost
node (a failover: ask the cluster who serves the slot now). Each stream's position is kept by
its channel, so a group re-targeted anywhere resumes exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from livestats_shared.cluster import Address, ClusterClient
from redis.asyncio import Redis
from redis.crc import key_slot

from ..compat import raw_stream_replies

READER_NAME = "livestats.gateway.reader"


class ReadTarget:
    """The connection one group's XREAD goes out on, and a client on the same server to send
    the CLIENT UNBLOCK that interrupts it when a stream joins the group."""

    def __init__(self, reader: Redis, commands: Redis, *, owned: bool, asking: bool = False) -> None:
        self.reader = reader  # one dedicated connection, unparsed stream replies
        self.commands = commands
        self.owned = owned  # closed with the group (a Cluster's per-group connection)
        self.asking = asking  # the slot is being imported here: each read needs ASKING first
        self.client_id: int | None = None  # the reader connection's CLIENT ID, once asked

    async def prepare(self) -> None:
        """Learn the reader's CLIENT ID (before the read: the unblocker needs it meanwhile)."""
        if self.client_id is None:
            self.client_id = int(await self.reader.client_id())

    async def read(self, streams: dict[str, bytes], count: int, block_ms: int) -> Any:
        if self.asking:
            await self.reader.execute_command("ASKING")  # type: ignore[no-untyped-call]
        return await self.reader.xread(streams, count=count, block=block_ms)  # type: ignore[arg-type]

    async def unblock(self) -> bool:
        return self.client_id is not None and bool(await self.commands.client_unblock(self.client_id))

    def lost(self) -> None:
        """The connection broke: the next one (redis-py reconnects) has another CLIENT ID."""
        self.client_id = None

    async def close(self) -> None:
        if self.owned:
            await self.reader.aclose()


class Router(Protocol):
    """How streams are grouped, and where a group's reads go."""

    permanent: bool  # groups stay when they have no streams left (one server: its one group)

    def group_of(self, stream: str) -> Hashable: ...

    async def target(self, group: Hashable, stream: str, *, fresh: bool) -> ReadTarget:
        """A connection for `group` (`stream`: one of its streams). `fresh` after a lost node:
        ask again who serves it."""
        ...

    def redirected(self, address: Address, *, asking: bool) -> ReadTarget:
        """A connection to `address`, which a MOVED (or ASK) answer named."""
        ...

    async def close(self) -> None: ...


class OneServer:
    """One server: one group, one reader connection for the life of the gateway."""

    permanent = True

    def __init__(self, reader: Redis, commands: Redis) -> None:
        self._target = ReadTarget(raw_stream_replies(reader), commands, owned=False)

    def group_of(self, stream: str) -> Hashable:
        return None

    async def target(self, group: Hashable, stream: str, *, fresh: bool) -> ReadTarget:
        return self._target

    def redirected(self, address: Address, *, asking: bool) -> ReadTarget:
        raise RuntimeError(f"a single server answered with a Cluster redirection to {address}")

    async def close(self) -> None:
        await self._target.reader.aclose()


class ClusterSlots:
    """A Cluster: a group per hash slot, each read on its own connection to the slot's node."""

    permanent = False

    def __init__(self, cluster: ClusterClient) -> None:
        self._cluster = cluster

    def group_of(self, stream: str) -> Hashable:
        return key_slot(stream.encode())

    async def target(self, group: Hashable, stream: str, *, fresh: bool) -> ReadTarget:
        if fresh:
            address = await self._cluster.slot_owner(key_slot(stream.encode()))
        else:
            address = await self._cluster.owner(stream)
        return self.redirected(address, asking=False)

    def redirected(self, address: Address, *, asking: bool) -> ReadTarget:
        reader = raw_stream_replies(self._cluster.dedicated_client(address, READER_NAME))
        return ReadTarget(reader, self._cluster.node_client(address), owned=True, asking=asking)

    async def close(self) -> None:
        return None  # each group closes its own connection; the node clients are the cluster's
