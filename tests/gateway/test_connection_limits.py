"""Idle, trickling and half-sent connections are closed within the configured timeouts while the
gateway (a real process under a 1,024-descriptor limit) keeps answering health checks and an
authenticated user."""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import sys
import threading
import time

import httpx
import pytest
from livestats_cli.embedded import free_port

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
IDLE_SOCKETS = 3_000
BOUND_S = 30.0  # failure bound for anything the gateway must do; never a timing figure


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture
async def limited_gateway(redis_url):
    port, token = free_port(), secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "LIVESTATS_GATEWAY_REDIS_URL": redis_url,
        "LIVESTATS_GATEWAY_PORT": str(port),
        "LIVESTATS_GATEWAY_ADMIN_TOKEN": token,
        "LIVESTATS_GATEWAY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "LIVESTATS_GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "LIVESTATS_GATEWAY_MAX_CONNECTIONS": "800",
        "LIVESTATS_GATEWAY_PROCESSES": "1",  # the cap and the descriptor limit are one process's
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livestats_gateway",
        env=env,
        preexec_fn=_limit_descriptors,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            deadline = time.monotonic() + BOUND_S
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                assert proc.returncode is None and time.monotonic() < deadline, "gateway did not start"
                await asyncio.sleep(0.1)
        yield url, port, token
    finally:
        proc.terminate()
        await proc.wait()


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), BOUND_S) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


async def _trickle(port: int, stop: asyncio.Event) -> bool:
    """Slowloris: a header line every 0.3 s, never the end of the headers. True once the
    server closed the connection, False if the test stopped it first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    i = 0
    try:
        while not stop.is_set():
            if reader.at_eof():
                return True
            try:
                writer.write(f"X-Slow-{i}: {i}\r\n".encode())
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                return True
            i += 1
            await asyncio.sleep(0.3)
        return False
    finally:
        writer.close()


def _keep_asking(url: str, token: str, stop: threading.Event, latencies: list[float]) -> None:
    """Another user, on a thread of its own (the flood's loop must not slow its requests)."""
    with httpx.Client(base_url=url, timeout=BOUND_S) as client:
        while not stop.is_set():
            for path, headers in (("/healthz", {}), ("/api/runs?limit=1", {"Authorization": f"Bearer {token}"})):
                started = time.monotonic()
                answer = client.get(path, headers=headers)
                assert answer.status_code == 200, (path, answer.status_code, answer.text)
                latencies.append(time.monotonic() - started)
            stop.wait(0.1)


async def test_idle_and_slow_connections_are_closed_while_health_and_users_keep_answering(limited_gateway):
    url, port, token = limited_gateway
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_SOCKETS + 200:
        pytest.skip(f"this test opens {IDLE_SOCKETS} sockets; the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, IDLE_SOCKETS * 2)), hard))
    stop, stop_asking = asyncio.Event(), threading.Event()
    latencies: list[float] = []
    asking = asyncio.create_task(asyncio.to_thread(_keep_asking, url, token, stop_asking, latencies))
    slowloris = asyncio.create_task(_trickle(port, stop))
    # A half-sent body: headers complete, 10 of 1,000 bytes.
    body_reader, body_writer = await asyncio.open_connection("127.0.0.1", port)
    body_writer.write(b"POST /api/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")

    async def idle() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), BOUND_S)

    sockets = await asyncio.gather(*(idle() for _ in range(IDLE_SOCKETS)))
    try:
        closed = await asyncio.gather(*(_closed_by_server(r) for r, _ in sockets))
        assert all(closed), f"{closed.count(False)} idle sockets still open after {BOUND_S} s"
        assert await _closed_by_server(body_reader)
        assert await asyncio.wait_for(slowloris, BOUND_S), "the slowloris connection was never closed"
        assert not asking.done(), asking  # no failed request so far
    finally:
        stop.set()
        stop_asking.set()
        for _, writer in sockets:
            writer.close()
        body_writer.close()
    await asking
    latencies.sort()
    print(
        f"\n{len(latencies)} requests during the flood: median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    assert len(latencies) >= 4


async def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` in one write; everything the gateway answers until it closes or 10 s pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
    except (TimeoutError, ConnectionResetError):
        pass
    writer.close()
    return answer


async def test_headers_over_64_kib_close_the_connection_but_a_large_body_in_one_read_is_a_request(gateway):
    port = gateway.config.port
    huge_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * (70 << 10) + b"\r\n\r\n"
    assert await _raw_exchange(port, huge_headers) == b""
    body = b'{"name": "' + b"x" * (200 << 10) + b'"}'  # one write: the headers' read carries the body
    request = b"POST /api/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert (await _raw_exchange(port, request)).startswith(b"HTTP/1.1 401")  # answered: no token
    positive = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (60 << 10) + b"\r\n\r\n"
    assert (await _raw_exchange(port, positive)).startswith(b"HTTP/1.1 200")
