"""Commands through the gateway's REST API instead of Redis: used when `--gateway` (or
LIVESTATS_GATEWAY_URL) is given. Same output and exit codes as the Redis versions; the run is
owned by the token's principal, so its owner and team see it in the API and the dashboard."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from livestats_shared.errors import InvalidEvent
from livestats_shared.ids import RunId, validate_run_id
from livestats_shared.stats import RunSnapshot

from . import export, runs, status_view
from .config import CliConfig
from .exit_codes import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_RUN_FAILED, EXIT_UNAVAILABLE
from .gateway_client import GatewayClient, GatewayError
from .tail_remote import tail_remote

COMMANDS = frozenset({"submit", "cancel", "runs", "tail", "status", "events", "export"})
_EVENTS_PAGE = 1000  # events per GET /api/runs/{id}/events


async def run(config: CliConfig, args: argparse.Namespace) -> int:
    async with GatewayClient(config.gateway_url, config.token) as gateway:
        try:
            if args.command == "submit":
                return await _submit(gateway, args)
            if args.command == "cancel":
                return await _cancel(gateway, args)
            if args.command == "runs":
                return await _runs(gateway, args)
            if args.command == "status":
                status_view.show(await _snapshot(gateway, validate_run_id(args.run_id)), as_json=args.json)
                return EXIT_OK
            if args.command == "events":
                return await _events(gateway, args)
            if args.command == "export":
                return await export.export(lambda rid: _snapshot(gateway, rid), _event_pages(gateway), args)
            lines = max(1, args.lines)
            return await tail_remote(gateway, validate_run_id(args.run_id), lines=lines, interval=args.interval)
        except GatewayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return _exit_code(exc.status)


def _exit_code(status: int | None) -> int:
    if status is None or status >= 500:
        return EXIT_UNAVAILABLE
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (400, 413, 422):
        return EXIT_BAD_INPUT
    return EXIT_RUN_FAILED  # 401, 403, 409: refused


async def _submit(gateway: GatewayClient, args: argparse.Namespace) -> int:
    headers = {"content-type": "application/json"}
    answer = await gateway.call("POST", "/api/runs", content=args.spec_text.encode(), headers=headers)
    run_id = answer["run_id"]
    page = f"{gateway.url}/runs/{run_id}"
    print(orjson.dumps({"run_id": run_id, "page": page}).decode() if args.json else f"submitted run {run_id}\n  {page}")
    sys.stdout.flush()
    if not args.wait:
        return EXIT_OK
    code = await tail_remote(gateway, run_id, lines=5, interval=None)
    if args.json:
        print(orjson.dumps(await gateway.call("GET", f"/api/runs/{run_id}")).decode())
    return code


async def _cancel(gateway: GatewayClient, args: argparse.Namespace) -> int:
    answer = await gateway.call("POST", f"/api/runs/{validate_run_id(args.run_id)}/cancel")
    print(orjson.dumps(answer).decode() if args.json else answer["status"])
    return EXIT_OK


async def _runs(gateway: GatewayClient, args: argparse.Namespace) -> int:
    found: list[RunSnapshot] = []
    params: dict[str, Any] = {"limit": args.limit, "status": args.status or []}
    while len(found) < args.limit:
        page = await gateway.call("GET", "/api/runs", params=params)
        found += [RunSnapshot.model_validate(r) for r in page["runs"]]
        if page["next"] is None:
            break
        params["cursor"] = page["next"]
    runs.show(found[: args.limit], as_json=args.json)
    return EXIT_OK


async def _snapshot(gateway: GatewayClient, run_id: RunId) -> RunSnapshot:
    return RunSnapshot.model_validate(await gateway.call("GET", f"/api/runs/{run_id}"))


def _event_pages(gateway: GatewayClient) -> export.EventSource:
    """A run's history from the gateway's pages, oldest first (what is there when asked)."""

    async def events(run_id: RunId, on_invalid: Callable[[InvalidEvent], None]) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            params = {"limit": _EVENTS_PAGE, **({"after": after} if after else {})}
            page = await gateway.call("GET", f"/api/runs/{run_id}/events", params=params)
            if page["skipped"]:
                on_invalid(InvalidEvent(f"{page['skipped']} stream entries of {run_id} that are not events"))
            for event in page["events"]:
                yield event
            if page["next"] is None or not page["events"]:
                return
            after = page["next"]

    return events


async def _events(gateway: GatewayClient, args: argparse.Namespace) -> int:
    run_id = validate_run_id(args.run_id)
    out = sys.stdout.buffer
    if not args.follow:
        async for event in _event_pages(gateway)(run_id, _warn):
            if args.after == "0-0" or _after(event["id"], args.after):
                out.write(orjson.dumps(event) + b"\n")
        out.flush()
        return EXIT_OK
    # Live: the gateway's Server-Sent Events (history first, then live) until run.finished.
    since = None if args.after == "0-0" else args.after
    async for message in gateway.stream(run_id, since):
        if message.id is None:
            continue  # hello, live, heartbeat: the link's own business
        out.write(orjson.dumps(message.data) + b"\n")
        out.flush()
        if message.kind == "run.finished":
            break
    return EXIT_OK


def _after(stream_id: str, after: str) -> bool:
    def key(sid: str) -> tuple[int, int]:
        ms, _, n = sid.partition("-")
        return int(ms), int(n or 0)

    return key(stream_id) > key(after)


def _warn(exc: InvalidEvent) -> None:
    print(f"warning: {exc}", file=sys.stderr)
