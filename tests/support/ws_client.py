"""A test client for `/ws/runs/{id}` that checks the protocol as it reads: every event's seq
must follow the previous one, unless a `reset` came first. It resumes like a UI would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


@dataclass
class RunWatcher:
    base: str  # ws://host:port
    run_id: str
    seqs: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)  # hello, live, reset, ...
    last_id: str | None = None
    close_code: int | None = None
    connects: int = 0
    sinces: list[str | None] = field(default_factory=list)  # the `since` of each connect
    restart: bool = False  # after a reset, the next event starts the numbering again
    headers: dict[str, str] = field(default_factory=dict)  # credentials (GatewayHandle.headers)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def url(self) -> str:
        since = f"?since={self.last_id}" if self.last_id else ""
        return f"{self.base}/ws/runs/{self.run_id}{since}"

    def take(self, raw: str | bytes) -> dict[str, Any]:
        frame = orjson.loads(raw)
        if frame["type"] == "events":
            for event in frame["events"]:
                assert self.restart or event["seq"] == self.last_seq + 1, (
                    f"seq {event['seq']} after {self.last_seq} (client {id(self)}, connect #{self.connects})"
                )
                self.seqs.append(event["seq"])
                self.ids.append(event["id"])
                self.types.append(event["type"])
                self.last_id = event["id"]
                self.restart = False
        else:
            self.controls.append(frame)
            if frame["type"] == "reset":
                self.seqs.clear()  # numbering starts again from the next event
                self.restart = True
        return frame

    async def session(
        self, *, until_seq: int | None = None, max_frames: int | None = None, timeout_s: float = 30
    ) -> None:
        """One connection: read until `until_seq` arrived, `max_frames` were read, or close."""
        self.connects += 1
        self.sinces.append(self.last_id)
        frames = 0
        async with asyncio.timeout(timeout_s):
            async with connect(self.url(), max_size=None, open_timeout=10, additional_headers=self.headers) as ws:
                await self._read(ws, until_seq, max_frames, frames)

    async def _read(self, ws: ClientConnection, until_seq: int | None, max_frames: int | None, frames: int) -> None:
        try:
            async for raw in ws:
                self.take(raw)
                frames += 1
                if until_seq is not None and self.last_seq >= until_seq:
                    return
                if max_frames is not None and frames >= max_frames:
                    return
        except ConnectionClosed as exc:  # an abnormal close (e.g. 1006): recorded like a normal one
            self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
            return
        self.close_code = ws.close_code

    async def follow(self, until_seq: int, timeout_s: float = 30) -> None:
        """Read until `until_seq`, reconnecting with `since` whenever the connection ends."""
        async with asyncio.timeout(timeout_s):
            while self.last_seq < until_seq:
                try:
                    await self.session(until_seq=until_seq, timeout_s=timeout_s)
                except (OSError, ConnectionClosed):
                    await asyncio.sleep(0.05)  # gateway restarting: try again


async def open_run(publisher, run_id: str, calls: int = 1, phase: str = "p") -> None:
    """Queue and start a run (2 events): the gate takes its calls and heartbeats from then on."""
    from livestats_shared.events import PhasePlan, RunQueued, RunStarted

    plan = RunQueued(name="open", planned_calls=calls, phases=[PhasePlan(name=phase, calls=calls)], timeout_s=60)
    await publisher.publish(run_id, plan)
    await publisher.publish(
        run_id, RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0, heartbeat_s=3600)
    )


def beat():
    """An event any running run takes, as often as wanted (the gate keeps no state for it)."""
    from livestats_shared.events import Heartbeat

    return Heartbeat(elapsed_s=1, remaining_s=1, in_flight=0, pids=[])


async def publish_run(
    publisher, run_id: str, n: int, *, per_tick: int = 200, tick_s: float = 0.01, finish: bool = True
) -> None:
    """Publish a run of exactly `n` events (queued, started, calls, a heartbeat if one slot is
    left, finished; without `finish`, a heartbeat instead), `per_tick` at a time."""
    from livestats_shared.events import (
        CallStarted,
        CallSucceeded,
        Heartbeat,
        Outcome,
        PhasePlan,
        RunFinished,
        RunQueued,
        RunStarted,
    )

    calls = (n - 3) // 2
    await publisher.publish(
        run_id,
        RunQueued(name="load", planned_calls=calls, phases=[PhasePlan(name="generate", calls=calls)], timeout_s=60),
    )
    await publisher.publish(
        run_id, RunStarted(worker="w", timeout_s=60, deadline_ts=0, retry_budget=0, heartbeat_s=3600)
    )
    sent = 2
    while sent < n - 1:
        for _ in range(min(per_tick, n - 1 - sent)):
            call = (sent - 2) // 2
            if call >= calls:  # an odd slot left: every call started has ended
                publisher.emit(run_id, Heartbeat(elapsed_s=0, remaining_s=0, in_flight=0, pids=[]))
            elif sent % 2 == 0:
                publisher.emit(run_id, CallStarted(phase="generate", call=call, attempt=1))
            else:
                publisher.emit(run_id, CallSucceeded(phase="generate", call=call, attempt=1, duration_s=0.1, bytes=400))
            sent += 1
        await asyncio.sleep(tick_s)
    last = RunFinished(outcome=Outcome.SUCCEEDED, reason="completed") if finish else beat()
    await publisher.publish(run_id, last)
