"""`python -m livestats_gateway` as a supervisor runs it: a real process, real signals; with
`--processes 2`, our own supervisor of two processes (tests/gateway/test_processes.py has the
fan-out through them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from helpers import free_ports
from livestats_cli.embedded import free_port, port_in_use
from livestats_gateway.supervise import RestartPolicy, Restarts
from proc_util import kill_all_with_env, pids_with_env

PYTHON_M = [sys.executable, "-m", "livestats_gateway", "--processes", "1"]
CLI = [sys.executable, "-m", "livestats_cli", "gateway", "--processes", "1"]  # execs the same program
TWO = [sys.executable, "-m", "livestats_gateway", "--processes", "2"]
CLI_TWO = [sys.executable, "-m", "livestats_cli", "gateway", "--processes", "2"]


@pytest.fixture
def gateway_process(redis_url: str) -> Iterator[object]:
    """Start gateway processes; any a failing test leaves running is killed."""
    started: list[subprocess.Popen[str]] = []
    marker = uuid.uuid4().hex  # carried by a supervisor's processes too

    def start(port: int, argv: list[str] = PYTHON_M, **settings: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTATS_GATEWAY_")}
        env.update(LIVESTATS_GATEWAY_REDIS_URL=redis_url, LIVESTATS_GATEWAY_PORT=str(port), PYTHONUNBUFFERED="1")
        env.update({f"LIVESTATS_GATEWAY_{k.upper()}": v for k, v in settings.items()}, LS_TEST_MARKER=marker)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    start.marker = marker  # type: ignore[attr-defined]
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    kill_all_with_env("LS_TEST_MARKER", marker)


@pytest.mark.parametrize(
    "argv", [PYTHON_M, CLI, TWO, CLI_TWO], ids=["python-m", "livestats-gateway", "supervisor", "livestats-supervisor"]
)
def test_a_busy_port_ends_the_gateway_with_exit_code_1_and_says_why(gateway_process, argv):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = gateway_process(port, argv)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert "address already in use" in out
    assert f"gateway did not start on 127.0.0.1:{port}" in out


@pytest.mark.parametrize("argv", [PYTHON_M, TWO], ids=["one-process", "two-processes"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_shuts_the_gateway_down_in_phases_and_exits_0(gateway_process, sig, argv):
    port, base = free_port(), free_ports(2)
    proc = gateway_process(port, [*argv, "--metrics-port-base", str(base)])
    ports = [port] if argv == PYTHON_M else [base, base + 1]  # a private port each: both processes
    deadline = time.monotonic() + 30
    while not all(port_in_use(p) for p in ports):  # listening once the app's startup is complete
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the gateway did not listen within 30 s"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    # uvicorn's phases, then the app's teardown, then ours; no traceback.
    assert out.index("Shutting down") < out.index("Application shutdown complete") < out.index("gateway stopped")
    assert "Traceback" not in out
    if argv == TWO:  # each process stopped itself, then the supervisor ended
        assert out.count("gateway stopped") == 2
        assert out.index("all 2 processes stopped") > out.rindex("gateway stopped")
    assert pids_with_env("LS_TEST_MARKER", gateway_process.marker) == []


def test_a_process_that_cannot_start_stops_the_supervisor_with_exit_code_1(gateway_process, tmp_path):
    """Exit 78 from a process means its start failed (a bad setting): restarting it would fail
    the same way, so the supervisor stops the other process and exits 1, not after retries."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text("{not json")
    proc = gateway_process(free_port(), TWO, tokens_file=str(tokens))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "not a livestats token file" in out
    assert "could not start (exit status 78" in out and "starting it again" not in out
    assert pids_with_env("LS_TEST_MARKER", gateway_process.marker) == []


def test_a_process_dying_again_and_again_is_restarted_with_growing_pauses_then_given_up():
    restarts = Restarts(RestartPolicy(stable_s=30, max_deaths_in_a_row=5, first_pause_s=0.5, max_pause_s=3))
    assert [restarts.after_death(1) for _ in range(5)] == [0.5, 1, 2, 3, None]
    # A death after a long enough run starts the count again.
    restarts = Restarts(RestartPolicy(stable_s=30, max_deaths_in_a_row=3))
    assert [restarts.after_death(uptime) for uptime in (1, 1, 60, 1, 1)] == [0.5, 1, 0.5, 1, None]


def test_private_ports_that_would_cover_the_public_port_are_refused(gateway_process):
    port = free_port()
    proc = gateway_process(port, [*TWO, "--metrics-port-base", str(port - 1)])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert f"include the gateway's own port {port}" in out
