"""What a browser test drives: a real gateway and an in-process worker, reached over the REST API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

import httpx
from gateway_fixtures import GatewayHandle, bearer

FAST_CALLS = {"FPF_SIM_LATENCY_MS": "30", "FPF_SIM_JITTER_MS": "10"}  # simulator env: quick answers


class Stack:
    """One gateway (restartable on its port) and a worker on the same private queue.

    `submit` uses the given token, as a browser user would; `snapshot` reads as the gateway's
    admin, so the test sees every run whoever owns it."""

    def __init__(self, gateway: GatewayHandle, http: httpx.AsyncClient, run_ids: list[str]) -> None:
        self.gateway = gateway
        self.http = http
        self.run_ids = run_ids  # every run submitted, so teardown can kill what a failing test left

    async def submit(self, spec: dict[str, Any], token: str) -> str:
        answer = await self.http.post("/api/runs", json=spec, headers=bearer(token))
        assert answer.status_code == 202, answer.text
        run_id: str = answer.json()["run_id"]
        self.run_ids.append(run_id)
        return run_id

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/api/runs/{run_id}")
        answer.raise_for_status()
        snap: dict[str, Any] = answer.json()
        # `queue` is the scheduler's view of a queued run (docs/scheduling.md), not folded from
        # its events: the snapshot proper is the rest.
        snap.pop("queue")
        return snap

    async def principal(self, token: str) -> str:
        """The principal a token logs in as (what the page's whoami must show)."""
        answer = await self.http.get("/api/session", headers=bearer(token))
        answer.raise_for_status()
        name: str = answer.json()["principal"]
        return name

    async def wait_status(
        self, run_id: str, statuses: str | Collection[str], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Poll the snapshot until its status is one of `statuses`; returns that snapshot."""
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout_s
        while (snap := await self.snapshot(run_id))["status"] not in wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} not {sorted(wanted)} within {timeout_s}s: {snap}")
            await asyncio.sleep(0.1)
        return snap
