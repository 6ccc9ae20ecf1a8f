"""`livestats tail RUN --gateway URL`: the same view, fed by the gateway's Server-Sent Events.

The first connection replays the run's history (folded into the snapshot, the view drawn once
the stream says `live`); a broken link is resumed with `Last-Event-ID` = the last event shown,
so nothing is missed or doubled. After a `reset` (history trimmed or the stream recreated)
the view starts again from the beginning of what the stream still holds.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque

from livestats_shared.events import Event
from livestats_shared.stats import apply, delta_for

from .exit_codes import EXIT_OK, EXIT_RUN_FAILED
from .gateway_client import GatewayClient, GatewayError
from .tail_view import TailView

_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.2, 5.0
_REFUSED = (400, 401, 403, 404, 422)  # retrying cannot help
_GONE = (4404, 4422)  # stream close codes: no such run, invalid id


async def tail_remote(gateway: GatewayClient, run_id: str, *, lines: int, interval: float | None) -> int:
    tty = sys.stdout.isatty()
    view = TailView(run_id, sys.stdout, tty=tty, events_shown=lines, min_interval_s=interval or (0.1 if tty else 1.0))
    stats: dict[str, str] = {}
    recent: deque[Event] = deque(maxlen=lines)
    live = False
    last: str | None = None
    backoff = _BACKOFF_MIN_S
    while True:
        try:
            async for message in gateway.stream(run_id, last):
                backoff = _BACKOFF_MIN_S
                if message.kind == "reset":
                    view.note(f"stream reset ({message.data.get('reason')}); starting again from the beginning")
                    stats, last, live = {}, None, False
                    recent.clear()
                    break
                if message.kind == "error" and message.data.get("code") in _GONE:
                    raise GatewayError(f"gateway closed the stream: {message.data.get('message')}", 404)
                if message.kind == "live" and not live:
                    live = True
                    view.start(stats, list(recent))
                if message.id is None:
                    continue  # hello, heartbeat, error: the link's own business
                event = Event.model_validate(message.data)
                last = message.id
                if live:
                    view.update(event)
                else:
                    apply(stats, delta_for(event.payload(), event.ts))
                    stats["seq"] = str(event.seq)
                    recent.append(event)
                if event.type == "run.finished":
                    if not live:
                        view.start(stats, list(recent))
                    view.render(force=True)
                    return EXIT_OK if view.snapshot().outcome == "succeeded" else EXIT_RUN_FAILED
            else:
                # The gateway ended the stream (shutting down, or closed it with a code): resume.
                view.note(f"stream ended; resuming after {last} in {backoff:.1f} s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        except GatewayError as exc:
            if exc.status in _REFUSED:
                raise
            view.note(f"{exc}; resuming after {last} in {backoff:.1f} s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
