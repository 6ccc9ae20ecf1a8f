"""A Sentinel-managed primary for tests: a primary, one replica and three Sentinels (quorum 2),
each a process of the suite's own valkey-server binary on a free port.

Failover is quick (down-after 1 s, failover-timeout 3 s) and every wait is for an event:
the replica's link up, each Sentinel seeing the others and the replica, the Sentinels naming
a new primary. The Sentinels are told of each other and of the replica in their config files
(`known-sentinel`, `known-replica`), so nothing waits for their discovery periods (up to 10 s).
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from livestats_cli import children
from livestats_cli.compat import valkey_binary
from livestats_cli.embedded import free_port

SERVICE = "livestats"
# Not lower: on a loaded machine a primary busy for a few hundred ms (promotion, a replica's
# sync) was taken for dead, and the Sentinels failed over back and forth.
DOWN_AFTER_MS = 1_000
FAILOVER_TIMEOUT_MS = 3_000


def _client(port: int) -> Any:  # redis-py's Sentinel and INFO calls are untyped
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll `check` (50 ms apart) until it is true; a generous bound, not a measurement."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:  # not up yet, or going down: ask again
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s (last error: {last!r})")


async def await_for(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """`wait_for` for a test's event loop: other tasks (publishers, clients) go on meanwhile."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s (last error: {last!r})")


class Server:
    """One valkey-server process (data node or Sentinel), its log in `directory`."""

    def __init__(self, directory: Path, port: int, args: list[str]) -> None:
        self.directory, self.port, self.args = directory, port, args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = children.spawn([str(valkey_binary()), *self.args], self.directory / "server.log")
        wait_for(f"valkey on port {self.port} answering", lambda: self._alive() and _client(self.port).ping())
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.directory / "server.log").read_text()[-2000:]
            raise AssertionError(f"valkey on port {self.port} exited with {self.proc.returncode}:\n{log}")
        return True

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing more reaches the replicas."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            children.stop(self.proc, f"valkey on port {self.port}", 10)


def data_node(directory: Path, port: int, primary: int | None = None) -> Server:
    args = [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "no",
        "--repl-diskless-sync-delay", "0",  # a replica's first sync starts at once, not after 5 s
    ]  # fmt: skip
    if primary is not None:
        args += ["--replicaof", "127.0.0.1", str(primary)]
    return Server(directory, port, args)


class SentinelSet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.nodes: dict[int, Server] = {}  # data nodes by port
        self.sentinels: list[Server] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{SERVICE}"

    def start(self) -> SentinelSet:
        self.nodes[self.primary_port] = data_node(self.base / "primary", self.primary_port).start()
        self.add_replica(self.replica_port, self.primary_port, self.base / "replica")
        ids = [secrets.token_hex(20) for _ in self.sentinel_ports]
        for i, port in enumerate(self.sentinel_ports):
            directory = self.base / f"sentinel-{i}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {directory}",
                f"sentinel myid {ids[i]}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel known-replica {SERVICE} 127.0.0.1 {self.replica_port}",
                *(
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {ids[j]}"
                    for j, other in enumerate(self.sentinel_ports)
                    if j != i
                ),
            ]
            conf.write_text("\n".join(lines) + "\n")  # Sentinel rewrites it: its state on disk
            self.sentinels.append(Server(directory, port, [str(conf), "--sentinel"]).start())
        for port in self.sentinel_ports:
            wait_for(f"Sentinel {port} sees the others and the replica", functools.partial(self._ready, port))
        return self

    def _ready(self, sentinel_port: int) -> bool:
        client = _client(sentinel_port)
        replicas = client.sentinel_slaves(SERVICE)
        quorum = client.execute_command("SENTINEL", "CKQUORUM", SERVICE)
        return "3 usable" in str(quorum) and any(r["port"] == self.replica_port and not r["is_sdown"] for r in replicas)

    def add_replica(self, port: int, primary: int, directory: Path) -> Server:
        """Start a replica of `primary` on `port` and wait for its link to be up."""
        node = self.nodes[port] = data_node(directory, port, primary).start()
        wait_for(f"replica {port} linked to {primary}", lambda: self.link_up(port))
        return node

    def link_up(self, port: int) -> bool:
        return bool(_client(port).info("replication").get("master_link_status") == "up")

    def primary(self) -> int:
        """The primary's port as the Sentinels' majority reports it."""
        ports = [int(_client(p).sentinel_get_master_addr_by_name(SERVICE)[1]) for p in self.sentinel_ports]
        return max(set(ports), key=ports.count)

    def kill_primary(self) -> int:
        """SIGKILL the primary; returns its port."""
        port = self.primary()
        self.nodes[port].kill()
        return port

    async def promoted(self, old: int, timeout_s: float = 60.0) -> int:
        """Wait until every Sentinel names a primary other than `old` and that one says it is
        the primary; returns its port."""

        def done() -> bool:
            ports = {int(_client(p).sentinel_get_master_addr_by_name(SERVICE)[1]) for p in self.sentinel_ports}
            return len(ports) == 1 and old not in ports and _client(ports.pop()).execute_command("ROLE")[0] == "master"

        await await_for(f"a replica promoted in place of {old}", done, timeout_s)
        return self.primary()

    async def replica_caught_up(self) -> None:
        """Wait until the replica has applied everything the primary has written so far."""

        def caught_up() -> bool:
            primary = _client(self.primary()).info("replication")["master_repl_offset"]
            return bool(_client(self.replica_port).info("replication")["master_repl_offset"] >= primary)

        await await_for("the replica caught up with the primary", caught_up)

    async def revive_as_replica(self, port: int) -> None:
        """Start a fresh (empty) server on a killed node's port as a replica of the primary now,
        and wait for its link."""
        directory = self.base / f"revived-{port}-{os.urandom(2).hex()}"
        self.nodes[port] = data_node(directory, port, self.primary()).start()
        await self.replicated()

    async def replicated(self) -> None:
        """Wait until the primary the Sentinels name has a replica in sync with it."""

        def online() -> bool:
            info = _client(self.primary()).info("replication")
            return info.get("role") == "master" and any(
                isinstance(v, dict) and v.get("state") == "online" for k, v in info.items() if k.startswith("slave")
            )

        await await_for("a replica online", online)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes.values()]:
            server.stop()
