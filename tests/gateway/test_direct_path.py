"""The streaming endpoints' path below the framework (fanout/direct.py): frames written straight
to the connection, and the ASGI path where that cannot be (per-message compression)."""

from __future__ import annotations

import asyncio

from livestats_gateway.fanout.direct import _Flag, _Inbox
from livestats_shared.events import Heartbeat
from livestats_shared.ids import new_run_id
from websockets.asyncio.client import connect
from ws_client import RunWatcher, publish_run


async def _watch_live_then_more(gateway, publisher, compression: str | None) -> tuple[RunWatcher, list[bool]]:
    """A client joins a run of 5 events, goes live, gets 3 more; returns what it saw and how the
    gateway wrote to it (direct or not) while it was connected."""
    run_id = new_run_id()
    await publish_run(publisher, run_id, 5, finish=False)
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    hub = gateway.app_state["hub"]
    async with connect(watcher.url(), additional_headers=gateway.headers, compression=compression) as ws:
        while not any(c["type"] == "live" for c in watcher.controls):
            watcher.take(await asyncio.wait_for(ws.recv(), 5))
        direct = [sub.direct for sub in hub.connections]
        for i in range(3):
            publisher.emit(run_id, Heartbeat(elapsed_s=i, remaining_s=1, in_flight=0, pids=[]))
        while watcher.last_seq < 8:
            watcher.take(await asyncio.wait_for(ws.recv(), 5))
    return watcher, direct


async def test_a_stream_socket_is_written_directly(gateway, publisher):
    watcher, direct = await _watch_live_then_more(gateway, publisher, compression=None)
    assert direct == [True]
    assert watcher.seqs == list(range(1, 9))
    assert [c["type"] for c in watcher.controls[:2]] == ["hello", "live"]


async def test_with_compression_a_stream_socket_goes_through_asgi_and_gets_the_same(start_gateway, publisher):
    gateway = start_gateway(ws_compression=True)
    watcher, direct = await _watch_live_then_more(gateway, publisher, compression="deflate")
    assert direct == [False]
    assert watcher.seqs == list(range(1, 9))


async def test_the_inbox_hands_out_items_in_order_to_whoever_waits():
    inbox = _Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)  # both wait on an empty inbox
    assert inbox.empty() and not first.done()
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert sorted(await asyncio.gather(first, second)) == ["a", "b"]
    inbox.put_nowait("c")
    inbox.put_nowait("d")
    assert [await inbox.get(), await inbox.get()] == ["c", "d"] and inbox.empty()


async def test_the_flag_holds_waiters_until_it_is_set_again():
    flag = _Flag()
    await asyncio.wait_for(flag.wait(), 1)  # set at first
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters) and not flag.is_set()
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
