"""`livestats-gateway --processes 2`: two real processes behind one port (SO_REUSEPORT) under
the supervisor. Each keeps its own shared reader, so Redis reads grow with processes, not with
clients; every client is exact whichever process took it; the per-process metrics (private
ports, `process` label) add up; a process that dies is restarted without touching the other's
clients; SIGTERM stops them all cleanly."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from helpers import eventually, free_ports, wait_for_event, wait_until
from livestats_cli.embedded import free_port
from livestats_shared import keys
from livestats_shared.ids import new_run_id
from proc_util import kill_all_with_env, pids_with_env
from scrape_util import parse, total
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from ws_client import RunWatcher, beat, publish_run

pytestmark = pytest.mark.slow  # three gateway processes start per test

GATEWAY_READS = ("xread", "xrange", "xrevrange", "hgetall", "exists", "client|unblock", "client|id")


class Processes:
    """A supervised two-process gateway: the public port, each process's private port."""

    def __init__(self, redis_url: str, log: Path, count: int = 2) -> None:
        self.port, self.base, self.count = free_port(), free_ports(count), count
        self.token = secrets.token_urlsafe(32)
        self.marker = uuid.uuid4().hex  # every process of this gateway carries it (cleanup, pids)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTATS_GATEWAY_")}
        env.update(
            LIVESTATS_GATEWAY_REDIS_URL=redis_url,
            LIVESTATS_GATEWAY_PORT=str(self.port),
            LIVESTATS_GATEWAY_ADMIN_TOKEN=self.token,
            LIVESTATS_GATEWAY_MAX_STREAMS_PER_PRINCIPAL="10000",
            LIVESTATS_GATEWAY_REPLAYS_PER_PRINCIPAL="10000",
            LIVESTATS_GATEWAY_STALL_CHECK_INTERVAL_S="0.2",
            LS_TEST_MARKER=self.marker,
            PYTHONUNBUFFERED="1",
        )
        argv = [sys.executable, "-m", "livestats_gateway", "--processes", str(count)]
        argv += ["--metrics-port-base", str(self.base)]
        self.log = log
        with log.open("wb") as out:
            self.supervisor = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def private(self, index: int) -> str:
        return f"http://127.0.0.1:{self.base + index}"

    def scrape(self, index: int) -> dict:
        response = httpx.get(f"{self.private(index)}/metrics", timeout=5)
        response.raise_for_status()
        return parse(response.text)

    def total(self, index: int, name: str, **labels: str) -> float:
        samples = self.scrape(index)
        # Every sample of process i carries process="i": its series stay apart from its sibling's.
        assert {dict(ls).get("process") for (_, ls) in samples} == {str(index)}
        return total(samples, name, **labels)

    def ready(self, index: int) -> bool:
        try:
            return httpx.get(f"{self.private(index)}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    async def wait_ready(self) -> None:
        async def all_ready() -> bool:
            assert self.supervisor.poll() is None, self.log.read_text()
            return all([await asyncio.to_thread(self.ready, i) for i in range(self.count)])

        await eventually(all_ready, timeout_s=60, interval_s=0.1)

    def pid(self, index: int) -> int | None:
        """The live process serving slot `index` (from its command line), if any."""
        for pid in pids_with_env("LS_TEST_MARKER", self.marker):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if b"--process-index" in argv and argv[argv.index(b"--process-index") + 1] == str(index).encode():
                return pid
        return None

    def stop(self) -> int:
        self.supervisor.send_signal(signal.SIGTERM)
        return self.supervisor.wait(timeout=60)


@pytest.fixture
def start_processes(redis_url: str, tmp_path: Path) -> Iterator[object]:
    started: list[Processes] = []

    def start(count: int = 2) -> Processes:
        gateway = Processes(redis_url, tmp_path / f"gateway-{len(started)}.log", count)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.supervisor.poll() is None:
            gateway.supervisor.kill()
            gateway.supervisor.wait(30)
        kill_all_with_env("LS_TEST_MARKER", gateway.marker)


async def _command_calls(redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def _drain(ws, live: asyncio.Event, last_seqs: list[int], i: int) -> None:
    async for message in ws:
        frame = orjson.loads(message)
        if frame["type"] == "live":
            live.set()
        elif frame["type"] == "events" and frame["events"]:
            last_seqs[i] = frame["events"][-1]["seq"]


async def test_two_processes_read_redis_per_event_not_per_client(start_processes, publisher, redis):
    """Counted, not timed: each process does at most one XREAD per write wake-up whether 2 or
    100 clients watch (spread over both by the kernel); a per-client reader would make it 100."""
    gateway = start_processes()
    await gateway.wait_ready()

    async def measure(clients: int) -> tuple[int, int, list[float]]:
        run_id = new_run_id()
        await publish_run(publisher, run_id, 4, finish=False)
        url = f"{gateway.ws}/ws/runs/{run_id}"
        sockets = [await connect(url, additional_headers=gateway.headers, max_size=None) for _ in range(clients)]
        last_seqs, live = [0] * clients, [asyncio.Event() for _ in sockets]
        drains = [asyncio.create_task(_drain(ws, live[i], last_seqs, i)) for i, ws in enumerate(sockets)]
        async with asyncio.timeout(60):
            for joined in live:
                await joined.wait()
        per_process = [gateway.total(i, "livestats_gateway_clients") for i in range(2)]
        await redis.config_resetstat()
        for _ in range(100):
            for _ in range(10):
                publisher.emit(run_id, beat())
            await asyncio.sleep(0.01)
        await publisher.flush(5)
        events = await redis.xlen(keys.run_events(run_id))
        await wait_until(lambda: min(last_seqs) >= events, timeout_s=60)
        calls = await _command_calls(redis)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*drains, return_exceptions=True)
        writes = calls.get("evalsha", 0) + calls.get("eval", 0)
        return writes, sum(calls.get(c, 0) for c in GATEWAY_READS), per_process

    for clients in (2, 100):
        writes, reads, per_process = await measure(clients)
        assert writes > 0
        # Two readers, each at most one XREAD per wake-up, plus the indexes' and stall monitors'
        # few periodic reads: independent of the client count.
        assert reads <= 2 * writes + 60, (clients, writes, reads)
    assert all(n > 0 for n in per_process), per_process  # the 100 were spread over both processes
    assert sum(per_process) == 100


async def test_fifty_late_joiners_over_two_processes_each_receive_every_event_once(start_processes, publisher, redis):
    gateway = start_processes()
    await gateway.wait_ready()
    run_id, n = new_run_id(), 5_000
    producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=50))
    await wait_for_event(redis, run_id, "run.queued", 30)

    async def late_joiner(delay: float) -> RunWatcher:
        await asyncio.sleep(delay)
        watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
        await watcher.session(until_seq=n, timeout_s=120)
        return watcher

    watchers = await asyncio.gather(*(late_joiner(i / 50) for i in range(50)))
    await producer
    for w in watchers:
        assert w.seqs == list(range(1, n + 1)), w.close_code
        assert not [c for c in w.controls if c["type"] == "reset"]

    # Each process counts the joins it served and the events it queued: both served some, and
    # the sums are exact (a client may hold its last event before its join is counted: wait).
    def per_process(name: str) -> list[float]:
        return [gateway.total(i, name) for i in range(2)]

    await wait_until(lambda: sum(per_process("livestats_gateway_replay_events_count")) >= 50)
    joins = per_process("livestats_gateway_replay_events_count")
    assert sum(joins) == 50 and all(joins), joins
    await wait_until(lambda: sum(per_process("livestats_gateway_events_sent_total")) >= 50 * n)
    assert sum(per_process("livestats_gateway_events_sent_total")) == 50 * n
    # Each process is a stall-monitor candidate; the lease elects one of them.
    await wait_until(lambda: sum(per_process("livestats_gateway_stall_leader")) == 1, timeout_s=30)
    # A private port answers health and metrics only: the API and the streams are refused there.
    private = gateway.private(1)
    async with httpx.AsyncClient(headers=gateway.headers, timeout=5) as client:
        assert (await client.get(f"{private}/api/runs/{run_id}")).status_code == 404
        assert (await client.get(f"http://127.0.0.1:{gateway.port}/api/runs/{run_id}")).status_code == 200
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{private.replace('http', 'ws')}/ws/runs/{run_id}", additional_headers=gateway.headers)
    assert refused.value.response.status_code == 403


async def test_a_killed_process_is_restarted_and_the_other_ones_clients_are_untouched(
    start_processes, publisher, redis
):
    gateway = start_processes()
    await gateway.wait_ready()
    run_id, n = new_run_id(), 6_000
    producer = asyncio.create_task(publish_run(publisher, run_id, n, per_tick=20, tick_s=0.01))
    await wait_for_event(redis, run_id, "run.queued", 30)
    watchers = [RunWatcher(gateway.ws, run_id, headers=gateway.headers) for _ in range(20)]
    followers = [asyncio.create_task(w.follow(n, timeout_s=120)) for w in watchers]
    await wait_until(lambda: all(w.seqs for w in watchers), timeout_s=60)
    on = [int(gateway.total(i, "livestats_gateway_clients")) for i in range(2)]
    assert all(on) and sum(on) == 20, on  # both processes hold some of the clients

    killed = gateway.pid(0)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    await wait_until(lambda: gateway.pid(0) not in (None, killed), timeout_s=30)
    await asyncio.gather(producer, *followers)
    for w in watchers:
        assert w.seqs == list(range(1, n + 1))
    # Process 0's clients were cut off and resumed (on either process); process 1's never noticed.
    assert sorted(w.connects for w in watchers) == [1] * on[1] + [2] * on[0]
    await gateway.wait_ready()  # the new process 0 serves

    assert await asyncio.to_thread(gateway.stop) == 0
    log = gateway.log.read_text()
    assert f"process 0 (pid {killed}) ended (signal SIGKILL)" in log and "starting it again" in log
    assert log.count("gateway stopped") == 2 and "all 2 processes stopped" in log
    assert "Traceback" not in log
    assert pids_with_env("LS_TEST_MARKER", gateway.marker) == []  # nothing left running
