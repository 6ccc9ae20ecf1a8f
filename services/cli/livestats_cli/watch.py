"""`livestats watch PATH --run ID`: an orchestrator's status file as live phase events.

The file's directory is watched with watchfiles (inotify on Linux: woken by the kernel, no
polling loop), so a file replaced by rename is seen as well as one rewritten in place. Changes
are debounced, the file is parsed, and a phase event is published through the gateway's ingest
API (`POST /api/runs/{id}/events`, so it works from another host with a token) only when the
parsed status differs from the last one published. A malformed file is reported and watching
goes on; so does an unreachable gateway (the change is published with the next one). A refusal
that will not heal (401/403, no such run, run finished) stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
from livestats_shared.errors import InvalidRunId
from livestats_shared.ids import validate_run_id
from watchfiles import Change, awatch

from .config import CliConfig
from .exit_codes import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_RUN_FAILED
from .gateway_client import GatewayClient, GatewayError
from .status_file import PhaseTracker, StatusFileError, parse_status

_RETRIES = 3  # tries per change while the gateway is unreachable
_RETRY_DELAY_S = 0.5
_READY_MS = 1_000  # watchfiles' wait for changes per round, in its own thread


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("watch", help="publish an orchestrator's JSON status file as phase events (external runs)")
    s.add_argument("path", help="the status file, e.g. current-phase.json (need not exist yet)")
    s.add_argument("--run", required=True, dest="run_id", help="the external run (POST /api/runs with external)")
    s.add_argument(
        "--debounce-ms",
        type=_debounce,
        default=200,
        help=f"group changes over this long, {DEBOUNCE_MS[0]} to {DEBOUNCE_MS[1]} ms (default 200)",
    )
    s.add_argument("--json", action="store_true", help="print each published event as a JSON line")


# Below 10 ms the watcher's loop would wake almost continuously (a core spent on nothing);
# above a minute a change would wait longer than anyone watching expects.
DEBOUNCE_MS = (10, 60_000)


def _debounce(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of milliseconds: {text!r}") from None
    low, high = DEBOUNCE_MS
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low} to {high} ms, got {value}")
    return value


async def run(config: CliConfig, args: argparse.Namespace) -> int:
    try:
        run_id = validate_run_id(args.run_id)
    except InvalidRunId as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    path = _target(args.path)
    if path is None:
        return EXIT_BAD_INPUT
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with GatewayClient(config.gateway_url, config.token) as gateway:
        watcher = _Watcher(gateway, run_id, path, emit_json=args.json)
        try:
            await watcher.seed()
            changes = awatch(
                path.parent,
                watch_filter=lambda _change, changed: Path(changed) == path,
                debounce=args.debounce_ms,
                step=min(50, args.debounce_ms),
                stop_event=stop,
                recursive=False,
                # watchfiles' own wait in its thread (5 s by default); the first timeout tells us
                # the inotify watch is in place. The file is read only when the kernel reports a
                # change, never on a timeout.
                rust_timeout=_READY_MS,
                yield_on_timeout=True,
            )
            ready = False
            async for batch in changes:
                if not ready:
                    # Read what is already there only now that no later write can be missed.
                    ready = True
                    _note(f"watching {path} for run {run_id}, publishing to {gateway.url}")
                    await watcher.handle()
                elif any(change != Change.deleted for change, _ in batch):
                    await watcher.handle()
        except GatewayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND if exc.status == 404 else EXIT_RUN_FAILED
    _note("stopped")
    return EXIT_OK


def _target(given: str) -> Path | None:
    path = Path(given).absolute()
    if not path.parent.is_dir():
        print(f"error: directory {path.parent} does not exist", file=sys.stderr)
        return None
    return path


class _Watcher:
    def __init__(self, gateway: GatewayClient, run_id: str, path: Path, *, emit_json: bool) -> None:
        self.gateway = gateway
        self.run_id = run_id
        self.path = path
        self.emit_json = emit_json
        self.tracker = PhaseTracker()

    async def handle(self) -> None:
        """Read, parse and, if it changed, publish the status file. Raises GatewayError only
        for refusals that retrying cannot fix."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return  # not written yet, or between a delete and the rename that replaces it
        except (OSError, UnicodeDecodeError) as exc:
            _note(f"cannot read {self.path}: {exc}")
            return
        try:
            status = parse_status(text)
        except StatusFileError as exc:
            _note(f"malformed status file {self.path.name}, not published: {exc}")
            return
        now = time.monotonic()
        events = self.tracker.events_for(status, now)
        if not events:
            _note(f"unchanged: phase {status.phase} {status.status}, not published")
            return
        wires = [{"type": event.TYPE, "data": event.model_dump(mode="json")} for event in events]
        for attempt in range(1, _RETRIES + 1):
            try:
                answer = await self.gateway.post_events(self.run_id, wires)
                break
            except GatewayError as exc:
                if not exc.transient:
                    raise
                _note(f"{exc} (try {attempt} of {_RETRIES})")
                if attempt == _RETRIES:
                    _note("not published; the next change of the file will be")
                    return
                await asyncio.sleep(_RETRY_DELAY_S * attempt)
        self.tracker.published(status, events, now)
        _note(f"published {' and '.join(e.TYPE for e in events)} {status.phase} (seq {answer['last_seq']})")
        if self.emit_json:
            # The batch's events are numbered consecutively up to the answer's last seq.
            first = answer["last_seq"] - len(wires) + 1
            for n, wire in enumerate(wires):
                line = {**wire, "run_id": self.run_id, "seq": first + n}
                if n == len(wires) - 1:
                    line["id"] = answer["last_id"]
                sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
            sys.stdout.flush()

    async def seed(self) -> None:
        """Learn which phases the run already shows started or ended (a restarted watch must not
        publish them again). An unreachable gateway is not fatal here: the file is still read."""
        try:
            snapshot = await self.gateway.call("GET", f"/api/runs/{self.run_id}")
        except GatewayError as exc:
            if not exc.transient:
                raise
            _note(f"cannot read the run's phases ({exc}); publishing what the file says")
            return
        self.tracker.seed({p["name"]: p.get("state") for p in snapshot.get("phases", [])}, time.monotonic())


def _note(text: str) -> None:
    print(f"watch: {text}", file=sys.stderr, flush=True)
