"""Streams tell the truth about gaps: a history trimmed under a paused replay gives `reset`, never
a silent jump (WebSocket and SSE); `since=0-0` means "from the start"; REST pages say when the
history they were asked for is gone. Protocol: docs/api.md, "Continuity"."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import orjson
import pytest
from helpers import wait_until
from livestats_gateway.fanout.join import first_break
from livestats_shared import keys
from livestats_shared.ids import new_run_id
from websockets.asyncio.client import connect
from ws_client import RunWatcher, publish_run

N = 20_000  # events in the run: far more than a 256 KB send queue and small socket buffers hold
KEEP = 1_000  # entries left by the trim
# A client that does not read keeps a small receive buffer (as a browser tab in the background
# does); loopback's default buffers would otherwise take the whole run.
SMALL_RCVBUF = (socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def _paused_then_trimmed(start_gateway, publisher, redis) -> tuple[Any, str]:
    gateway = start_gateway(client_queue_bytes=256 << 10)
    run_id = new_run_id()
    await publish_run(publisher, run_id, N, per_tick=2_000, tick_s=0)
    return gateway, run_id


async def _trim_once_paused(gateway, redis, run_id: str) -> None:
    """Wait until the replay waits for its client (its queue is full), then trim under it."""
    stats = gateway.app_state["metrics"].fanout
    await wait_until(lambda: stats.replays_waiting >= 1, timeout_s=60)
    await redis.xtrim(keys.run_events(run_id), maxlen=KEEP, approximate=False)


def _check_one_trim_reset(resets: list[dict[str, Any]], seq_before_reset: int, seqs_after: list[int]) -> None:
    assert [r["reason"] for r in resets] == ["trimmed"], resets
    reset = resets[0]
    first_kept = N - KEEP + 1
    # The premise: the trim removed events this client had not been sent yet.
    assert seq_before_reset + 1 < first_kept
    assert reset["expected_seq"] == seq_before_reset + 1
    assert reset["next_seq"] == first_kept and reset["next_id"]
    assert reset["snapshot"]["seq"] == N
    assert seqs_after == list(range(first_kept, N + 1))


async def test_a_trim_during_a_paused_websocket_replay_gives_a_reset_not_a_silent_gap(start_gateway, publisher, redis):
    gateway, run_id = await _paused_then_trimmed(start_gateway, publisher, redis)
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers)
    sock = socket.socket()
    sock.setsockopt(*SMALL_RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.config.port))
    # The client library stops reading its socket once it holds 4 frames: the replay fills the
    # socket buffers and then the gateway's send queue, and waits. (Uncompressed, so that the
    # buffers fill with few events.)
    headers = gateway.headers
    async with connect(watcher.url(), additional_headers=headers, max_queue=4, compression=None, sock=sock) as ws:
        await _trim_once_paused(gateway, redis, run_id)
        resets: list[dict[str, Any]] = []
        seq_before_reset = 0
        while not (resets and watcher.last_seq == N):
            before = watcher.last_seq
            frame = watcher.take(await asyncio.wait_for(ws.recv(), 30))  # asserts seq contiguity
            if frame["type"] == "reset":
                resets.append(frame)
                seq_before_reset = before
    _check_one_trim_reset(resets, seq_before_reset, watcher.seqs)
    assert watcher.controls[0]["type"] == "hello"


async def test_a_trim_during_a_paused_sse_replay_gives_a_reset_not_a_silent_gap(start_gateway, publisher, redis):
    gateway, run_id = await _paused_then_trimmed(start_gateway, publisher, redis)
    # httpx sets socket options once connected: a buffer shrunk that late needs to be larger, or
    # the transfer crawls once the client reads (the window was scaled for a large one).
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)])
    async with (
        gateway.client(transport=transport) as client,
        client.stream("GET", f"/api/runs/{run_id}/stream", timeout=60) as response,
    ):
        assert response.status_code == 200
        await _trim_once_paused(gateway, redis, run_id)  # nothing is read from the response yet
        seqs: list[int] = []
        resets: list[dict] = []
        seq_before_reset = 0
        async for kind, body in _sse_messages(response):
            if kind == "reset":
                resets.append(body)
                seq_before_reset, seqs = (seqs[-1] if seqs else 0), []
            elif "seq" in body:
                expected = seqs[-1] + 1 if seqs else (None if resets else 1)
                assert expected is None or body["seq"] == expected, f"seq {body['seq']} after {seqs[-1:]}"
                seqs.append(body["seq"])
                if resets and body["seq"] == N:
                    break
    _check_one_trim_reset(resets, seq_before_reset, seqs)


async def _sse_messages(response: httpx.Response):
    message: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line:
            field, _, value = line.partition(": ")
            message[field] = value
        elif "data" in message:
            yield message.get("event", "message"), orjson.loads(message["data"])
            message = {}


@pytest.mark.parametrize("since", ["0-0", "0"])
async def test_since_zero_means_from_the_start_without_a_reset(gateway, publisher, since):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 50)
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers, last_id=since)
    await watcher.session(until_seq=50)
    assert watcher.seqs == list(range(1, 51))
    assert [c["type"] for c in watcher.controls] == ["hello"]  # no reset (it returns at seq 50, before `live`)

    async with (
        gateway.client() as client,
        client.stream("GET", f"/api/runs/{run_id}/stream", headers={"Last-Event-ID": since}) as response,
    ):
        kinds, seqs = [], []
        async for kind, body in _sse_messages(response):
            kinds.append(kind)
            seqs += [body["seq"]] if "seq" in body else []
            if seqs[-1:] == [50]:
                break
    assert seqs == list(range(1, 51))
    assert "reset" not in kinds


async def test_from_the_start_of_a_trimmed_history_the_reset_says_where_it_now_starts(gateway, publisher, redis):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 50)
    await redis.xtrim(keys.run_events(run_id), maxlen=10, approximate=False)
    for since in (None, "0-0"):
        watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers, last_id=since)
        await watcher.session(until_seq=50)
        resets = [c for c in watcher.controls if c["type"] == "reset"]
        assert [(r["reason"], r["expected_seq"], r["next_seq"]) for r in resets] == [("trimmed", 1, 41)], since
        assert watcher.seqs == list(range(41, 51))


async def test_rest_event_pages_say_when_the_history_asked_for_was_trimmed(gateway, publisher, redis):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 50)
    stream = keys.run_events(run_id)
    ids = [entry_id.decode() for entry_id, _ in await redis.xrange(stream)]
    async with gateway.client() as client:
        whole = (await client.get(f"/api/runs/{run_id}/events")).json()
        assert (whole["trimmed"], whole["gap"], whole["first_seq"], whole["first_id"]) == (False, False, 1, ids[0])
        assert whole["after"] is None and len(whole["events"]) == 50

        await redis.xtrim(stream, maxlen=10, approximate=False)
        start = (await client.get(f"/api/runs/{run_id}/events")).json()
        assert (start["trimmed"], start["gap"], start["first_seq"], start["first_id"]) == (True, True, 41, ids[40])
        assert [e["seq"] for e in start["events"]] == list(range(41, 51))

        gone = (await client.get(f"/api/runs/{run_id}/events", params={"after": ids[4]})).json()
        assert (gone["after"], gone["gap"], gone["first_seq"]) == (ids[4], True, 41)
        assert [e["seq"] for e in gone["events"]] == list(range(41, 51))

        kept = (await client.get(f"/api/runs/{run_id}/events", params={"after": ids[44]})).json()
        assert (kept["trimmed"], kept["gap"]) == (True, False)
        assert [e["seq"] for e in kept["events"]] == list(range(46, 51))


def test_first_break_finds_the_first_event_that_does_not_follow_its_predecessor():
    assert first_break([5, 6, 7], 5) is None
    assert first_break([5, 6, 7], None) is None
    assert first_break([], 5) is None
    assert first_break([9, 10], 5) == 0  # trimmed before this page
    assert first_break([5, 6, 9, 10], 5) == 2  # a hole inside the page
    assert first_break([5, 6, 1, 2], 5) == 2  # recreated: the numbering starts again
    assert first_break([5, 5, 6], 5) == 1  # a duplicate
    assert first_break([1, 2, 5, 6, 7], 5, start=2) is None  # the rest of a page, after a reset
    assert first_break([1, 2, 5, 6, 8], 5, start=2) == 4
    assert first_break([1, 2], 5, start=2) is None


@pytest.mark.cluster
async def test_a_since_inside_the_stream_that_is_none_of_its_ids_resets_then_replays_it_all(gateway, publisher, redis):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 20)
    last_ms = (await redis.xrevrange(keys.run_events(run_id), count=1))[0][0].decode().split("-")[0]
    watcher = RunWatcher(gateway.ws, run_id, headers=gateway.headers, last_id=f"{last_ms}-99999")
    await watcher.session(until_seq=20)
    resets = [c for c in watcher.controls if c["type"] == "reset"]
    assert [(r["reason"], r["expected_seq"], r["next_seq"]) for r in resets] == [("unknown_since", None, 1)]
    assert watcher.seqs == list(range(1, 21))
