"""`livestats up` (what `make run` runs) as a user runs it: a real process tree, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import cast

import pytest
from livestats_cli.embedded import EmbeddedServer, free_port
from livestats_cli.local_auth import load_or_create_password
from livestats_shared import keys
from livestats_shared.auth import TokenStore
from livestats_shared.history import read_events
from livestats_shared.redis_client import connect
from proc_util import kill_all_with_env, pids_with_env

TINY = {
    "name": "tiny",
    "phases": [{"name": "generate", "calls": 6, "concurrency": 3, "env": {"FPF_SIM_LATENCY_MS": "50"}}],
}
SLOW = {
    "name": "slow",
    "phases": [{"name": "generate", "calls": 50, "concurrency": 4, "env": {"FPF_SIM_LATENCY_MS": "2000"}}],
}


@pytest.fixture
def start_up(tmp_path: Path):
    """Start `livestats up`; whatever a failing test leaves running is stopped afterwards."""
    started: list[tuple[subprocess.Popen[str], str]] = []

    def start(
        spec: dict, *extra: str, gateway_port: int | None = None, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[str], str, int]:
        proc, marker, port = _start_up(tmp_path, spec, *extra, gateway_port=gateway_port or free_port(), env=env)
        started.append((proc, marker))
        return proc, marker, port

    yield start
    for proc, marker in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)  # also closes the pipe
        kill_all_with_env("LS_TEST_MARKER", marker)


def _start_up(
    tmp_path: Path, spec: dict, *extra: str, gateway_port: int, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, int]:
    marker = uuid.uuid4().hex
    port = free_port()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    extra_env = env or {}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "LIVESTATS_REDIS_URL") and not k.startswith("LIVESTATS_GATEWAY_")
    }
    env.update(extra_env)
    env.update(
        LIVESTATS_DATA_DIR=str(tmp_path / "run"),
        LIVESTATS_EMBEDDED_PORT=str(port),
        LIVESTATS_GATEWAY_PORT=str(gateway_port),  # never the default 8000: tests run side by side
        LS_TEST_MARKER=marker,
        PYTHONUNBUFFERED="1",
    )
    argv = [sys.executable, "-m", "livestats_cli", "up", "--spec", str(spec_file), *extra]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, marker, port


@pytest.mark.slow  # the whole stack as processes
def test_up_shows_a_run_to_the_end_and_leaves_no_process_behind(start_up):
    proc, marker, _port = start_up(TINY, "--exit-after-run")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "embedded server on 127.0.0.1:" in out
    assert "XREAD BLOCK 0 STREAMS 'livestats:run:{" in out  # the redis-cli recipe is printed
    assert "run finished: succeeded (completed)" in out
    assert "6/6" in out
    assert pids_with_env("LS_TEST_MARKER", marker) == []


def _read_until(proc: subprocess.Popen[str], text: str, timeout_s: float = 30) -> list[str]:
    """The lines `up` printed up to and including the first that contains `text`."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:  # `up` exited
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not printed within {timeout_s} s; got: {''.join(lines)}")


def _healthz_status(base_url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/healthz", timeout=5) as response:
        return int(response.status)


def _gateway_pids(marker: str) -> list[int]:
    found = []
    for pid in pids_with_env("LS_TEST_MARKER", marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"livestats_gateway" in f.read():
                    found.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited since the scan
    return found


def _get_json(url: str, token: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with opener.open(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow  # the whole stack as processes
def test_up_starts_the_gateway_prints_its_urls_and_stops_it_on_sigterm(start_up, tmp_path):
    proc, marker, port = start_up(TINY)
    lines = _read_until(proc, "stack is up")
    out = "".join(lines)
    base = next(ln.split()[2].rstrip(",") for ln in lines if ln.startswith("gateway on "))
    assert base.startswith("http://127.0.0.1:")
    assert f"API docs at {base}/docs" in out
    run_id = next(ln.split()[1] for ln in lines if ln.startswith("run ") and "submitted" in ln)
    assert f"{base.replace('http://', 'ws://')}/ws/runs/{run_id}" in out
    assert _healthz_status(base) == 200
    assert len(_gateway_pids(marker)) == 1
    # The login URL carries a local admin token in its fragment (never sent to a server).
    login = next(ln.split()[2] for ln in lines if ln.startswith("dashboard: open ") and "/login#token=" in ln)
    assert login.startswith(f"{base}/login#token=lsk_")
    token = login.split("#token=", 1)[1]
    assert _get_json(f"{base}/api/session", token)["principal"] == "local-admin"
    assert _get_json(f"{base}/api/runs/{run_id}", token)["owner"] == "local-admin"

    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + rest
    assert _gateway_pids(marker) == []
    assert pids_with_env("LS_TEST_MARKER", marker) == []
    assert token not in (tmp_path / "run" / "gateway.log").read_text()

    # The session's token was revoked on the way out (the server's data survives on disk).
    with EmbeddedServer(tmp_path / "run" / "valkey", port) as server:

        async def stored_tokens() -> dict:
            client = connect(server.url, "livestats.tests")
            try:
                return await cast(Awaitable[dict[bytes, bytes]], client.hgetall(keys.AUTH_TOKENS))
            finally:
                await client.aclose()

        assert asyncio.run(stored_tokens()) == {}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.slow  # the whole stack as processes
def test_up_moves_the_gateway_to_a_free_port_when_its_own_is_busy_and_says_so(start_up, busy_port):
    proc, _marker, _port = start_up(TINY, "--no-demo", gateway_port=busy_port)
    lines = _read_until(proc, "stack is up")
    assert any(f"port {busy_port} is busy; the gateway uses" in ln for ln in lines), lines
    base = next(ln.split()[2].rstrip(",") for ln in lines if ln.startswith("gateway on "))
    assert base != f"http://127.0.0.1:{busy_port}"
    assert _healthz_status(base) == 200


@pytest.mark.slow  # the whole stack as processes
def test_sigterm_mid_run_stops_everything_and_the_history_survives_a_restart(start_up, tmp_path):
    proc, marker, port = start_up(SLOW)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "phase generate:" in line:
            break
    run_id = next(ln.split()[1] for ln in lines if ln.startswith("run ") and "submitted" in ln)
    deadline = time.monotonic() + 30  # until calls are in flight: server, worker, gateway, FPF calls
    while len(pids_with_env("LS_TEST_MARKER", marker)) < 4:
        assert time.monotonic() < deadline, pids_with_env("LS_TEST_MARKER", marker)
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped." in out
    assert pids_with_env("LS_TEST_MARKER", marker) == []

    # Same data dir, new server: the run's whole history is still there (append-only file).
    with EmbeddedServer(tmp_path / "run" / "valkey", port) as server:

        async def read() -> list:
            client = connect(server.url, "livestats.tests")
            try:
                return await read_events(client, run_id)
            finally:
                await client.aclose()

        events = asyncio.run(read())
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    finished = events[-1].payload()
    assert events[-1].type == "run.finished"
    assert (finished.outcome.value, finished.reason) == ("cancelled", "worker_shutdown")


@pytest.mark.parametrize("argv", [["up", "--spec", "/nonexistent.json"], ["submit", "/nonexistent.json"]])
def test_an_unreadable_spec_is_a_clear_error_with_exit_code_2(argv):
    result = subprocess.run([sys.executable, "-m", "livestats_cli", *argv], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "nonexistent.json" in result.stderr


@pytest.mark.slow  # the whole stack as processes
def test_if_up_itself_is_killed_its_server_worker_and_gateway_still_stop(start_up):
    proc, marker, _port = start_up(SLOW)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "phase generate:" not in proc.stdout.readline():
        pass
    proc.kill()  # SIGKILL: the launcher gets no chance to stop anything
    proc.wait()
    deadline = time.monotonic() + 30
    while pids_with_env("LS_TEST_MARKER", marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_with_env("LS_TEST_MARKER", marker) == []


@pytest.mark.slow  # the whole stack as processes
def test_a_second_up_on_the_same_data_dir_is_refused_clearly(start_up, tmp_path):
    first, _, _ = start_up(SLOW, "--no-demo")
    _read_until(first, "worker pid")
    second, _, _ = start_up(TINY, "--exit-after-run")
    out, _ = second.communicate(timeout=30)
    assert second.returncode == 2
    assert "another `livestats up` is using" in out
    assert first.poll() is None  # the first one is unaffected


def _shutdown_steps(log: Path) -> list[str]:
    """The shutdown lines of up.log, without their timestamps, in order."""
    steps = ("stopping...", "gateway stopped", "session token", "worker stopped", "server stopped", "stopped.")
    lines = [ln.split(" ", 1)[1] for ln in log.read_text().splitlines() if " " in ln]
    return [ln for ln in lines if ln.startswith(steps)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_up_piped_into_tee_stops_in_order_on_a_signal_to_its_process_group(tmp_path, sig):
    """`make run 2>&1 | tee log`, then Ctrl-C: the terminal signals the whole foreground process
    group, so tee dies too and `up`'s stdout becomes a broken pipe in the middle of its shutdown."""
    marker = uuid.uuid4().hex
    port = free_port()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SLOW))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LIVESTATS_REDIS_URL")}
    env = {k: v for k, v in env.items() if not k.startswith("LIVESTATS_GATEWAY_")}
    env.update(
        LIVESTATS_DATA_DIR=str(tmp_path / "run"),
        LIVESTATS_EMBEDDED_PORT=str(port),
        LIVESTATS_GATEWAY_PORT=str(free_port()),
        LS_TEST_MARKER=marker,
        PYTHONUNBUFFERED="1",
    )
    teed = tmp_path / "tee.log"
    command = f"{sys.executable} -m livestats_cli up --spec {spec_file} 2>&1 | tee {teed}"
    # Its own session and process group, as a terminal's foreground job is.
    shell = subprocess.Popen(["sh", "-c", command], env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "phase generate:" not in (teed.read_text() if teed.exists() else ""):
            assert time.monotonic() < deadline, teed.read_text() if teed.exists() else "no output"
            time.sleep(0.1)
        assert len(pids_with_env("LS_TEST_MARKER", marker)) >= 4  # up, server, worker, gateway (+ tee, sh)
        os.killpg(shell.pid, sig)
        deadline = time.monotonic() + 60
        while pids_with_env("LS_TEST_MARKER", marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_with_env("LS_TEST_MARKER", marker) == [], "processes left after the shutdown"
    finally:
        kill_all_with_env("LS_TEST_MARKER", marker)
        shell.wait(timeout=30)

    steps = _shutdown_steps(tmp_path / "run" / "up.log")
    assert [s.split(" (")[0] for s in steps] == [
        "stopping...",
        "gateway stopped",
        f"session token {steps[2].split()[2]} revoked",
        "worker stopped",
        "server stopped",
        "stopped.",
    ], steps
    # The worker ended its run `cancelled` before the server went, and the token is gone for good.
    password = (tmp_path / "run" / "redis-password").read_text().strip()
    with EmbeddedServer(tmp_path / "run" / "valkey", port, password=password) as server:

        async def read() -> tuple[dict, list]:
            client = connect(server.url, "livestats.tests")
            try:
                run_ids = [r.decode() for r in await client.zrange(keys.RUNS_INDEX, 0, -1)]
                tokens = await cast(Awaitable[dict[bytes, bytes]], client.hgetall(keys.AUTH_TOKENS))
                return tokens, await read_events(client, run_ids[0])
            finally:
                await client.aclose()

        tokens, events = asyncio.run(read())
    assert tokens == {}
    assert events[-1].type == "run.finished"
    assert events[-1].payload().outcome.value == "cancelled"


def test_the_printed_events_recipe_names_the_server_when_it_is_not_on_its_usual_port(start_up):
    proc, _marker, port = start_up(TINY)
    lines = _read_until(proc, "stack is up")
    recipe = next(ln for ln in lines if "livestats events" in ln and "--follow" in ln)
    assert f"@127.0.0.1:{port}/0" in recipe and "redis-password" in recipe, recipe
    assert any("make run ARGS=--demo-failing" in ln for ln in lines), lines
    run_id = next(ln.split()[1] for ln in lines if ln.startswith("run ") and "submitted" in ln)
    # The recipe works as printed (pasted into a shell without LIVESTATS_ variables).
    command = recipe.split("#")[0].replace(".venv/bin/livestats", str(Path(sys.executable).parent / "livestats"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTATS_") and k != "REDIS_URL"}
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["type"] == "run.finished", result.stdout[-500:]
    assert run_id in recipe


def test_up_protects_its_server_with_a_password_and_its_token_with_a_short_renewed_expiry(start_up, tmp_path):
    ttl_s = 3  # LOCAL_TOKEN_TTL_S is 15 minutes; the mechanism is the same
    proc, marker, port = start_up(TINY, "--no-demo", env={"LIVESTATS_LOCAL_TOKEN_TTL_S": str(ttl_s)})
    lines = _read_until(proc, "stack is up")
    out = "".join(lines)
    password_file = tmp_path / "run" / "redis-password"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    password = password_file.read_text().strip()
    assert len(password) >= 43 and password not in out
    # Anyone else on this machine: refused.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(64).startswith(b"-NOAUTH")
    token = next(ln.split()[2] for ln in lines if ln.startswith("dashboard: open ")).split("#token=", 1)[1]
    server = EmbeddedServer(tmp_path / "run" / "valkey", port, password=password)

    async def expiry() -> int:
        client = connect(server.url, "livestats.tests")
        try:
            record = await client.hget(keys.AUTH_TOKENS, token.split("_")[1])  # type: ignore[misc]
            return json.loads(record)["expires_ms"]
        finally:
            await client.aclose()

    first = asyncio.run(expiry())
    assert first <= time.time() * 1000 + ttl_s * 1000
    deadline = time.monotonic() + 30
    while asyncio.run(expiry()) == first:  # renewed while `up` lives
        assert time.monotonic() < deadline, "the local admin token was not renewed"
        time.sleep(0.2)

    proc.kill()  # SIGKILL: `up` cannot revoke its token
    proc.wait()
    killed_ms = time.time() * 1000
    deadline = time.monotonic() + 30
    while pids_with_env("LS_TEST_MARKER", marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_with_env("LS_TEST_MARKER", marker) == []
    with server:  # the same data, the same password
        left = asyncio.run(expiry())
        assert left <= killed_ms + ttl_s * 1000

        async def still_valid() -> bool:
            client = connect(server.url, "livestats.tests")
            try:
                return await TokenStore(client).verify(token) is not None
            finally:
                await client.aclose()

        deadline = time.monotonic() + 30
        while asyncio.run(still_valid()):
            assert time.monotonic() < deadline, "the token of a killed `up` stayed valid"
            time.sleep(0.2)
    for log in ("gateway.log", "worker.log"):
        assert password not in (tmp_path / "run" / log).read_text()


def test_up_migrates_its_own_servers_data_from_an_older_key_layout(start_up, tmp_path):
    # The embedded server's data as a version before the partitions left it.
    data_dir = tmp_path / "run"
    password = load_or_create_password(data_dir)
    old_run = "01jq0000000000000000"
    with EmbeddedServer(data_dir / "valkey", free_port(), password=password) as server:

        async def write_layout_1() -> None:
            redis = connect(server.url, "livestats.tests")
            await redis.hset(f"livestats:run:{{{old_run}}}:stats", "status", "succeeded")  # type: ignore[misc]
            await redis.xadd(f"livestats:run:{{{old_run}}}:events", {"type": "run.finished"})
            await redis.hset("livestats:auth:tokens", "0123456789ab", "{}")  # type: ignore[misc]
            await redis.aclose()

        asyncio.run(write_layout_1())

    proc, _, _ = start_up(TINY, "--exit-after-run")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "uses an older key layout: migrating it" in out
    assert "renamed 2 keys of 1 runs and 1 auth keys" in out
    with EmbeddedServer(data_dir / "valkey", free_port(), password=password) as server:

        async def read_back() -> tuple[bytes | None, dict[bytes, bytes]]:
            redis = connect(server.url, "livestats.tests")
            status = await redis.hget(keys.run_stats(old_run), "status")  # type: ignore[misc]
            record = await redis.hgetall(keys.LAYOUT)  # type: ignore[misc]
            await redis.aclose()
            return status, record

        assert asyncio.run(read_back()) == (b"succeeded", {b"version": b"2", b"partitions": b"16"})
