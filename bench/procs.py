"""The processes a benchmark needs, each in its own process (no load generator shares a GIL with
a server): the embedded Valkey, the livestats gateway, the alternative apps. Plus what we read
off them: RSS, CPU time, INFO commandstats, the machine."""

from __future__ import annotations

import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from livestats_cli.embedded import EmbeddedServer, free_port

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess on a port of its own, its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path, also: tuple[int, ...] = ()
    ) -> None:
        """Started once `port` and the ports in `also` (a gateway's private ports: every one of
        its processes) listen."""
        self.name, self.port = name, port
        self.headers: dict[str, str] = {}  # what a client must send (livestats: the admin token)
        self.private_ports: tuple[int, ...] = ()  # a gateway's processes' own ports (metrics)
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not all(_listening(p) for p in (port, *also)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start; see {self.log_path}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_valkey(data_dir: Path) -> EmbeddedServer:
    server = EmbeddedServer(data_dir, appendonly=False)  # nothing to keep; disk writes would add noise
    server.start()
    return server


def start_gateway(redis_url: str, log_dir: Path, processes: int = 1, name: str = "livestats") -> Server:
    """The gateway with a fixed admin token (as the tests start it), and a stream limit per
    principal above the largest audience here: every load-generator client is that admin.
    `processes` > 1: a supervisor of that many processes sharing the port (SO_REUSEPORT),
    started once every process listens (their private ports)."""
    port = free_port()
    base = _free_port_run(processes)
    token = secrets.token_urlsafe(32)
    env = {
        "LIVESTATS_GATEWAY_ADMIN_TOKEN": token,
        "LIVESTATS_GATEWAY_MAX_STREAMS_PER_PRINCIPAL": "100000",
        # BENCH_GATEWAY_PYTHONPATH: measure another checkout's gateway (before/after comparisons);
        # the caller's PYTHONPATH after it (a worktree's sources ahead of an editable install).
        "PYTHONPATH": os.pathsep.join(
            p for p in (os.environ.get("BENCH_GATEWAY_PYTHONPATH"), _probe(), os.environ.get("PYTHONPATH")) if p
        ),
        "LIVESTATS_GATEWAY_REDIS_URL": redis_url,
        "LIVESTATS_GATEWAY_PORT": str(port),
        "LIVESTATS_GATEWAY_QUEUE_NAME": "livestats:bench-queue",
        # Explicit: the gateway's own default is one process per core.
        "LIVESTATS_GATEWAY_PROCESSES": str(processes),
        "LIVESTATS_GATEWAY_METRICS_PORT_BASE": str(base),
    }
    private = tuple(range(base, base + processes))
    server = Server(name, [sys.executable, "-m", "livestats_gateway"], env, port, log_dir, private)
    server.private_ports = private
    server.headers = {"Authorization": f"Bearer {token}"}
    return server


def _free_port_run(count: int) -> int:
    """A base port whose `count` ports from it can be bound now, below the ephemeral range (so
    no client connection takes one meanwhile)."""
    for base in range(20_000, 32_000, 97):
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _probe() -> str | None:
    """BENCH_OBJCOUNTS=<file>: the gateway counts its live objects by type into <file> every
    BENCH_OBJCOUNTS_S seconds, to tell a leak from high-water; BENCH_PROFILE=<file>: it runs
    under cProfile and writes the statistics there when it exits (bench/probe/sitecustomize.py)."""
    wanted = os.environ.get("BENCH_OBJCOUNTS") or os.environ.get("BENCH_PROFILE")
    return str(ROOT / "bench" / "probe") if wanted else None


def start_alternative(name: str, redis_url: str, log_dir: Path) -> Server:
    """`name` is a module of bench/alternatives; served by uvicorn with the gateway's defaults
    (same event loop, HTTP and WebSocket implementations)."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"bench.alternatives.{name}:app", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    return Server(name, argv, {"BENCH_REDIS_URL": redis_url}, port, log_dir)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (a gateway
    supervisor's processes, which do the work; its children that exited and were reaped are
    in its own figures' `cutime`, not counted here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return own + sum(_cpu_or_zero(child) for child in children(pid))


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux: its main thread's children list)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # exited since it was listed


def wait_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a core (/proc/<pid>/task/*/
    schedstat): how much a busy machine held it back. A process that waits a large share of a
    window was starved, and what it measured says more about the machine than about itself."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total / 1e9


def _info(url: str, section: str) -> dict[str, Any]:
    with redis.Redis.from_url(url) as client:
        info: dict[str, Any] = client.info(section)
        return info


def command_calls(url: str) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats), INFO itself excluded."""
    stats = _info(url, "commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("info", None)
    return calls


def machine(url: str) -> dict[str, object]:
    server = _info(url, "server")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "server": f"valkey {server.get('valkey_version', server.get('redis_version'))}",
        "load_avg_at_start": os.getloadavg(),
        "commit": commit.stdout.strip(),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor()
