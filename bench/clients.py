"""A load-generator process: WebSocket clients driven by the coordinator over stdin/stdout.

    python -m bench.clients '<json config>'

Prints `ready` once every client is connected; then `start` on stdin begins the measured
window and `stop` ends it: the process prints one JSON line of results and exits. Clients
parse every frame they receive (orjson) the way a real client would; an event's latency is
the time from the publisher stamping it (`data.pid`: bench/stamp.py, same clock) to the
moment its frame is parsed here.

Modes: `stream` (events and snapshots, counted and timed), `churn` (clients keep joining and
leaving, for the soak), `replay` (one client joins at `start`, timed until its first live event).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .stamp import latency_ns

CONNECTING = 200  # connections opened at once
BUCKET_NS = 20_000  # latency histogram: 20 us buckets (cheap to fill), merged by the coordinator


class Tally:
    def __init__(self) -> None:
        self.measuring = False
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.frames = 0
        self.hist: Counter[int] = Counter()
        self.max_ns = 0
        self.snapshots: list[tuple[str, int, int]] = []  # ("client:run", seq, received ns): polling
        self.closes: Counter[str] = Counter()
        self.joins = 0
        self.publish_ms: list[int] = []  # per frame: ms from the publisher's stamp to XADD
        self.t0 = time.perf_counter()

    def take(self, run: str, msg: str | bytes) -> None:
        if not self.measuring:
            return
        now = time.time_ns()
        body = orjson.loads(msg)
        kind = body.get("type")
        self.frames += 1
        if kind == "events":
            events = body["events"]
            self.events += len(events)
            # Untimed events (no pid: history fill, seeding, run.started) are counted, not timed.
            latencies = [latency_ns(pid, now) for e in events if (pid := e["data"].get("pid"))]
            if latencies:
                self.hist.update([lat // BUCKET_NS for lat in latencies])
                self.max_ns = max(self.max_ns, *latencies)
                last = events[-1]
                if "id" in last and last["data"].get("pid"):
                    # How much of the latency was spent before Redis stored the event (ms clock;
                    # `ts` is the publisher's clock when the event was handed to it).
                    stored_ms = int(last["id"].partition("-")[0])
                    self.publish_ms.append(stored_ms - last["ts"])
        elif kind == "snapshot":
            self.snapshots.append((run, int(body["snapshot"]["seq"]), now))

    def result(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "frames": self.frames,
            "hist": dict(self.hist),
            "max_ns": self.max_ns,
            "snapshots": self.snapshots,
            "closes": dict(self.closes),
            "joins": self.joins,
            "publish_ms_max": max(self.publish_ms, default=None),
            "publish_ms_p50": sorted(self.publish_ms)[len(self.publish_ms) // 2] if self.publish_ms else None,
            "window_s": time.perf_counter() - self.t0,
        }


HEADERS: dict[str, str] = {}  # from the config: the livestats gateway wants a token


def _connect(url: str) -> connect:
    return connect(
        url, additional_headers=HEADERS, max_size=None, compression=None, ping_interval=None, open_timeout=60
    )


async def _open(url: str, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        try:
            return await _connect(url)
        except OSError as exc:
            raise OSError(f"cannot connect to {url}: {exc}") from exc


async def _read(ws: ClientConnection, run: str, tally: Tally) -> None:
    try:
        async for msg in ws:
            tally.take(run, msg)
    except ConnectionClosed:
        pass  # counted below from the close code
    code = ws.close_code
    tally.closes[str(code)] += 1


def _run_of(url: str) -> str:
    return url.rsplit("/", 1)[1].partition("?")[0]


async def stream(urls: list[str], commands: asyncio.StreamReader) -> None:
    """Connect every client, then measure one window per `start`/`stop` pair until `exit`."""
    tally = Tally()
    gate = asyncio.Semaphore(CONNECTING)
    sockets = await asyncio.gather(*(_open(u, gate) for u in urls))
    readers = [
        asyncio.create_task(_read(ws, f"{i}:{_run_of(u)}", tally))
        for i, (ws, u) in enumerate(zip(sockets, urls, strict=True))
    ]
    print("ready", flush=True)
    while (command := (await commands.readline()).strip()) in (b"start", b"stop"):
        if command == b"start":
            tally.reset()
            tally.measuring = True
        else:
            tally.measuring = False
            _report(tally.result())
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.gather(*readers, return_exceptions=True)


def _report(result: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    sys.stdout.flush()


async def churn(urls: list[str], commands: asyncio.StreamReader, period_s: float, share: float) -> dict[str, Any]:
    """Keep len(urls) clients connected; every `period_s` a `share` of them leave and as many join."""
    tally = Tally()
    tally.measuring = True
    gate = asyncio.Semaphore(CONNECTING)
    live: dict[ClientConnection, asyncio.Task[None]] = {}

    async def join(url: str) -> None:
        ws = await _open(url, gate)
        live[ws] = asyncio.create_task(_read(ws, _run_of(url), tally))
        tally.joins += 1

    await asyncio.gather(*(join(u) for u in urls))
    print("ready", flush=True)
    stop = asyncio.create_task(commands.readline())
    while not stop.done():
        await asyncio.wait([stop], timeout=period_s)
        leaving = random.sample(list(live), max(1, int(len(live) * share)))
        for ws in leaving:
            live.pop(ws)
        await asyncio.gather(*(ws.close() for ws in leaving), return_exceptions=True)
        await asyncio.gather(*(join(random.choice(urls)) for _ in leaving))
    await asyncio.gather(*(ws.close() for ws in live), return_exceptions=True)
    return tally.result()


async def replay(url: str, commands: asyncio.StreamReader) -> dict[str, Any]:
    """One late joiner: connect, take the whole history (until `live`), then the first event
    after it."""
    print("ready", flush=True)
    await commands.readline()
    t0 = time.perf_counter()
    events = 0
    live_at: float | None = None
    async with _connect(url) as ws:
        async for msg in ws:
            body = orjson.loads(msg)
            if body["type"] == "live":
                live_at = time.perf_counter() - t0
            elif body["type"] == "events":
                if live_at is not None:
                    return {"history_s": live_at, "first_live_s": time.perf_counter() - t0, "events": events}
                events += len(body["events"])
    raise RuntimeError(f"connection closed after {events} events ({ws.close_code})")


async def main(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    HEADERS.update(config.get("headers", {}))
    mode = config["mode"]
    if mode == "stream":
        await stream(config["urls"], commands)
    elif mode == "churn":
        _report(await churn(config["urls"], commands, config["period_s"], config["share"]))
    elif mode == "replay":
        _report(await replay(config["urls"][0], commands))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(orjson.loads(sys.argv[1])))
