"""The live run index behind `/ws/runs`: the runs feed (one entry per lifecycle change) read
once per process, each change sent as the run's fresh summary; running runs' progress is
re-read every `index_refresh_s` and sent when it changed. One reader per process, not per
client, and each update is encoded once for every client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from livestats_shared import keys
from livestats_shared.auth import Principal
from livestats_shared.control import TERMINAL
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import validate_run_id
from livestats_shared.redis_client import UNAVAILABLE, connect
from livestats_shared.stats import RunSnapshot
from redis.asyncio import Redis

from ..config import GatewayConfig
from ..ops.background import BackgroundTasks, Backoff
from .hub import Hub
from .subscriber import Subscriber
from .wire import RunsUpdate, now_ms

log = logging.getLogger("livestats.gateway.index")


class RunIndex:
    def __init__(self, config: GatewayConfig, redis: Redis, hub: Hub) -> None:
        self.config = config
        self.redis = redis
        self.hub = hub
        self._reader = connect(config.redis_url, "livestats.gateway.index", single_connection=True)
        self._subs: set[Subscriber] = set()
        self._active: dict[str, int] = {}  # non-terminal runs -> seq of the summary last sent
        self._tasks = BackgroundTasks(log, "/ws/runs gets no updates")
        self.updates_sent = 0

    async def __aenter__(self) -> RunIndex:
        self._tasks.start(self._feed_loop(), "index-feed")
        self._tasks.start(self._refresh_loop(), "index-refresh")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.stop()
        await self._reader.aclose()

    def alive(self) -> bool:
        return self._tasks.alive()

    def subscribe(self, sub: Subscriber) -> None:
        """Send `sub` the index's live updates until `unsubscribe`."""
        self._subs.add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    async def join(self, sub: Subscriber, principal: Principal) -> None:
        """Of the newest `index_limit` runs those the principal may see, then live updates newer
        than what they showed (of runs it may see)."""
        run_ids = [r.decode() for r in await self.redis.zrevrange(keys.RUNS_INDEX, 0, self.config.index_limit - 1)]

        def visible(summary: dict[str, Any]) -> bool:
            return principal.can_see(summary["owner"], summary["team"])

        summaries = [s for s in await self._summaries(run_ids) if visible(s)]
        sub.control("index", {"runs": summaries, "server_ts": now_ms()})
        seqs = {s["run_id"]: s["seq"] for s in summaries}
        sub.control("live", {})

        def keep(update: RunsUpdate) -> RunsUpdate | None:
            rest = update.newer_than(seqs, visible)
            if rest is not None:
                seqs.update((r["run_id"], r["seq"]) for r in rest.runs)
            return rest

        sub.go_live(keep)

    # -- reading -----------------------------------------------------------------------------

    async def _summaries(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Fresh summaries (one pipeline), newest first as given; expired runs are left out."""
        ids = list(run_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hgetall(keys.run_stats(rid))
            hashes = await pipe.execute()
        out = []
        for rid, raw in zip(ids, hashes, strict=True):
            if not raw:
                self._active.pop(rid, None)
                continue
            summary = RunSnapshot.from_hash(rid, {k.decode(): v.decode() for k, v in raw.items()}).model_dump(
                mode="json"
            )
            if summary["status"] in TERMINAL:
                self._active.pop(rid, None)
            else:
                self._active[rid] = summary["seq"]
            out.append(summary)
        return out

    def _send(self, summaries: list[dict[str, Any]]) -> None:
        if summaries and self._subs:
            update = RunsUpdate(summaries)
            for sub in list(self._subs):
                sub.offer(update)
            self.updates_sent += 1

    async def _feed_loop(self) -> None:
        position: bytes | None = None
        check_end = False  # after an outage: a promoted replica may end before our position
        backoff = Backoff()
        while True:
            try:
                if position is None or check_end:
                    last = await self._reader.xrevrange(keys.RUNS_FEED, count=1)
                    end = last[0][0] if last else b"0-0"
                    if position is None or _sid(end) < _sid(position):
                        position = end  # (a later position is kept: what was written after it is read next)
                    check_end = False
                reply = await self._reader.xread(
                    {keys.RUNS_FEED: position}, count=self.config.read_count, block=self.config.read_block_ms
                )
                if not reply:
                    continue
                entries = reply[0][1]
                position = entries[-1][0]
                changed = dict.fromkeys(rid for _, fields in entries if (rid := _run_id(fields)) is not None)
                self._send(await self._summaries(changed))
                backoff.reset()
            except UNAVAILABLE as exc:
                log.warning("run index lost Redis (%s); retrying", exc)
                check_end = True
                await backoff.wait()

    async def _refresh_loop(self) -> None:
        """Progress of running runs (calls done, failures) is not in the feed: re-read it."""
        while True:
            await asyncio.sleep(self.config.index_refresh_s)
            if not self._subs or not self._active:
                continue
            before = dict(self._active)
            try:
                summaries = await self._summaries(before)
            except UNAVAILABLE as exc:
                log.warning("run index refresh failed: %s", exc)
                continue
            self._send([s for s in summaries if s["seq"] != before.get(s["run_id"])])


def _sid(entry_id: bytes) -> tuple[int, int]:
    ms, _, n = entry_id.partition(b"-")
    return int(ms), int(n or b"0")


def _run_id(fields: dict[bytes, bytes]) -> str | None:
    try:
        return validate_run_id(fields[b"run_id"].decode())
    except (KeyError, UnicodeDecodeError, InvalidRunId):
        log.warning("runs feed entry without a valid run_id: %r", fields)
        return None
