"""A replayed run reaches a WebSocket client exactly like a live one: hello, history, `live`,
then its events as the replay publishes them, in order, each once."""

from __future__ import annotations

import asyncio

from helpers import wait_finished
from livestats_cli.replay import replay
from livestats_shared.control import submit_run
from livestats_shared.history import read_events
from livestats_shared.publish import Publisher
from livestats_shared.spec import RunSpec
from websockets.asyncio.client import connect
from ws_client import RunWatcher

# Calls one at a time, so the run (and its replay at speed 1) lasts about a second.
SPEC = RunSpec.model_validate(
    {
        "name": "to replay",
        "phases": [
            {"name": "generate", "calls": 8, "concurrency": 1, "predicted_tokens": 40, "category": "implementation",
             "env": {"FPF_SIM_LATENCY_MS": "80", "FPF_SIM_JITTER_MS": "0"}},
        ],
    }
)  # fmt: skip


async def test_a_replayed_run_streams_to_a_websocket_client_like_a_live_one(
    gateway, redis, publisher, queue_name, start_worker
):
    await start_worker()
    original_id = await submit_run(redis, publisher, SPEC, queue_name=queue_name)
    await wait_finished(redis, original_id, 30)
    original = await read_events(redis, original_id)

    loop = asyncio.get_running_loop()
    started: asyncio.Future[str] = loop.create_future()
    async with Publisher(redis) as replayer:
        replaying = asyncio.create_task(
            replay(replayer, {original_id: original}, speed=1.0, on_start=lambda _, new: started.set_result(new))
        )
        new_id = await started
        watcher = RunWatcher(gateway.ws, new_id, headers=gateway.headers)
        order: list[str] = []  # frame types as they arrived
        async with asyncio.timeout(30), connect(watcher.url(), additional_headers=watcher.headers) as ws:
            async for raw in ws:
                frame = watcher.take(raw)  # checks that every seq follows the previous one
                order.append(frame["type"])
                if watcher.types and watcher.types[-1] == "run.finished":
                    break
        await replaying

    assert order[0] == "hello" and "live" in order
    # The client joined while the replay was running: most events came after `live`, pushed.
    assert "events" in order[order.index("live") :]
    assert watcher.seqs == list(range(1, len(original) + 1))
    assert watcher.types == [e.type for e in original]
    snapshot = watcher.controls[0]["snapshot"]
    assert snapshot["replay_of"] == original_id
