"""Test helpers shared across test modules (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import sys
import time

from livestats_shared import keys
from livestats_shared.events import Event
from livestats_shared.history import read_events

# `livestats tail`'s progress line: calls done/planned, ok.
TAIL_COUNTERS = re.compile(r"calls (\d+)/(\d+) done, ok (\d+)")


async def wait_for_event(redis, run_id: str, event_type: str, timeout_s: float = 30.0, *, count: int = 1) -> Event:
    """Block on the run's stream (XREAD BLOCK, no polling) until `count` events of `event_type`
    have arrived since the run began; returns the last of them."""
    seen = 0
    stream = keys.run_events(run_id)
    last = "0-0"
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        reply = await redis.xread({stream: last}, block=max(1, int(min(left, 1.0) * 1000)), count=500)
        for _, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                event = Event.from_stream_entry(entry_id, fields)
                if event.type == event_type:
                    seen += 1
                    if seen == count:
                        return event
    events = await read_events(redis, run_id)
    story = [(e.type, e.data.get("call"), e.data.get("reason")) for e in events if e.type != "heartbeat"]
    raise AssertionError(
        f"not {count} x {event_type} for run {run_id} within {timeout_s}s; {len(events)} events, "
        f"the last that are not heartbeats: {story[-25:]}"
    )


async def wait_finished(redis, run_id: str, timeout_s: float = 30.0) -> Event:
    return await wait_for_event(redis, run_id, "run.finished", timeout_s)


async def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def eventually(check, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Poll the async predicate `check` until it holds (a generous bound, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def livestats(
    redis_url: str, queue: str, *argv: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the CLI in a process of its own; `env`: variables besides the Redis URL and queue."""
    env = {**os.environ, "LIVESTATS_REDIS_URL": redis_url, "LIVESTATS_QUEUE_NAME": queue, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestats_cli", *argv,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    except TimeoutError:
        proc.kill()  # never leave a CLI process behind a failing test
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_ports(count: int) -> int:
    """A base port whose `count` ports from it can be bound now (a gateway's private ports,
    `--metrics-port-base`). Below Linux's ephemeral range (32768 up), so no outgoing
    connection takes one of them between this check and the gateway's bind."""

    def bindable(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    for _ in range(200):
        base = random.randrange(20_000, 32_000 - count)
        if all(bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")
