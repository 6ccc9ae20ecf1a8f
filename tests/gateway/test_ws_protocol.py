"""`/ws/runs/{id}`: bad input, keepalive, and explicit continuity (reset, never a silent skip)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from livestats_shared import keys
from livestats_shared.events import Heartbeat
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from ws_client import RunWatcher, publish_run


async def _close_code(url: str, headers: dict[str, str]) -> int | None:
    async with connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    return ws.close_code


async def _frames_until(ws, kind: str, limit: int = 50) -> list[dict]:
    frames = []
    for _ in range(limit):
        frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
        if frames[-1]["type"] == kind:
            return frames
    raise AssertionError(f"no {kind} frame in {frames}")


async def test_unknown_run_invalid_id_and_bad_since_each_close_with_their_own_code(gateway, publisher):
    assert await _close_code(f"{gateway.ws}/ws/runs/{new_run_id()}", gateway.headers) == 4404
    for bad in ("UPPER", "a%3Ab", "x" * 65, "%E2%9C%93", "a%7Bb%7D"):
        assert await _close_code(f"{gateway.ws}/ws/runs/{bad}", gateway.headers) == 4422, bad
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    assert await _close_code(f"{gateway.ws}/ws/runs/{run_id}?since=yesterday", gateway.headers) == 4400
    assert (
        await _close_code(f"{gateway.ws}/ws/runs/{run_id}?since=99999999999999999999-0", gateway.headers) == 4400
    )  # > 64 bits


async def test_malformed_messages_get_an_error_frame_and_oversized_ones_close_the_socket(gateway, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    async with connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
        await _frames_until(ws, "live")
        await ws.send("{not json")
        assert (await _frames_until(ws, "error"))[-1]["code"] == "malformed"
        await ws.send(orjson.dumps({"type": "subscribe-everything"}).decode())
        assert (await _frames_until(ws, "error"))[-1]["code"] == "unknown_type"
        await ws.send(orjson.dumps({"type": "ping", "id": 7}).decode())
        pong = (await _frames_until(ws, "pong"))[-1]
        assert pong["id"] == 7 and pong["server_ts"] > 0
        await ws.send("x" * (gateway.config.client_message_max_bytes + 1))
        with pytest.raises(ConnectionClosed):
            await _frames_until(ws, "never")
    assert ws.close_code == 1009
    async with connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
        await ws.send(b"\x00binary")
        with pytest.raises(ConnectionClosed):
            await _frames_until(ws, "never")
    assert ws.close_code == 1003
    # the gateway is unharmed
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    await watcher.session(until_seq=4)
    assert watcher.seqs == [1, 2, 3, 4]
    async with gateway.client() as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_clients_get_a_server_time_heartbeat_after_their_hello(gateway, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    async with connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
        frames = await _frames_until(ws, "heartbeat")  # gateway fixture: every 0.5 s
    assert frames[0]["type"] == "hello"
    assert frames[0]["snapshot"]["status"] == "succeeded" and frames[0]["snapshot"]["seq"] == 4
    assert abs(frames[-1]["server_ts"] - frames[0]["server_ts"]) < 5_000


async def test_a_trimmed_history_is_announced_with_a_reset_and_the_snapshot(gateway, redis):
    run_id = new_run_id()
    async with Publisher(redis, stream_maxlen=100) as small:
        await publish_run(small, run_id, 2_000, per_tick=500, tick_s=0)
    first = await redis.xrange(keys.run_events(run_id), count=1)
    assert int(first[0][1][b"seq"]) > 1  # the premise: the stream was trimmed

    fresh = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    await fresh.session(until_seq=2_000)
    resets = [c for c in fresh.controls if c["type"] == "reset"]
    assert resets and resets[0]["reason"] == "trimmed" and resets[0]["snapshot"]["seq"] == 2_000
    assert fresh.seqs[-1] == 2_000 and fresh.seqs[0] == int(first[0][1][b"seq"])

    resuming = RunWatcher(gateway.ws, run_id, headers=gateway.headers, last_id="1-0")  # long gone
    await resuming.session(until_seq=2_000)
    assert [c["reason"] for c in resuming.controls if c["type"] == "reset"] == ["trimmed"]

    unknown = RunWatcher(
        gateway.ws, run_id, headers=gateway.headers, last_id=f"{first[0][0].decode().split('-')[0]}-999999"
    )
    await unknown.session(until_seq=2_000)
    assert [c["reason"] for c in unknown.controls if c["type"] == "reset"] == ["unknown_since"]


async def test_a_stream_deleted_and_recreated_under_a_live_client_is_detected(gateway, redis, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 10)
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    async with connect(watcher.url(), additional_headers=gateway.headers) as ws:
        while watcher.last_seq < 10:
            watcher.take(await asyncio.wait_for(ws.recv(), 5))
        await redis.delete(keys.run_events(run_id), keys.run_stats(run_id), keys.run_lifecycle(run_id))
        await publish_run(publisher, run_id, 6)  # same id, numbering starts again at 1
        while watcher.last_seq < 6 or not [c for c in watcher.controls if c["type"] == "reset"]:
            watcher.take(await asyncio.wait_for(ws.recv(), 5))
    reset = next(c for c in watcher.controls if c["type"] == "reset")
    assert reset["reason"] == "stream_reset"
    assert reset["snapshot"]["run_id"] == run_id
    assert watcher.seqs == [1, 2, 3, 4, 5, 6]  # after the reset, the new stream from its start


async def test_a_gap_left_by_hand_written_entries_is_skipped_with_a_log_not_sent(gateway, redis, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4, finish=False)  # still running: it takes the heartbeat below
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    async with connect(watcher.url(), additional_headers=gateway.headers) as ws:
        while watcher.last_seq < 4:
            watcher.take(await asyncio.wait_for(ws.recv(), 5))
        await redis.xadd(keys.run_events(run_id), {"note": "an operator's hand-written entry"})
        publisher.emit(run_id, Heartbeat(elapsed_s=1, remaining_s=1, in_flight=0, pids=[]))
        while watcher.last_seq < 5:
            watcher.take(await asyncio.wait_for(ws.recv(), 5))
    assert watcher.types[-1] == "heartbeat"
    assert gateway.app_state["hub"].stats.invalid_entries >= 1


async def test_a_hand_written_entry_inside_the_history_is_skipped_by_a_late_joiner(gateway, redis, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 3, finish=False)
    await redis.xadd(keys.run_events(run_id), {"note": "an operator's hand-written entry"})
    publisher.emit(run_id, Heartbeat(elapsed_s=1, remaining_s=1, in_flight=0, pids=[]))
    assert await publisher.flush(10)
    invalid = gateway.app_state["hub"].stats.invalid_entries
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    await watcher.session(until_seq=4)
    assert watcher.seqs == [1, 2, 3, 4] and watcher.types[-1] == "heartbeat"
    assert not [c for c in watcher.controls if c["type"] == "reset"]  # skipped, not a break
    assert gateway.app_state["hub"].stats.invalid_entries == invalid + 1
