"""`python -m livestats_gateway` as a supervisor runs it: a real process, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from livestats_cli.embedded import free_port, port_in_use

PYTHON_M = [sys.executable, "-m", "livestats_gateway"]
CLI = [sys.executable, "-m", "livestats_cli", "gateway"]  # execs the same program


@pytest.fixture
def gateway_process(redis_url: str) -> Iterator[object]:
    """Start gateway processes; any a failing test leaves running is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(port: int, argv: list[str] = PYTHON_M) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTATS_GATEWAY_")}
        env.update(LIVESTATS_GATEWAY_REDIS_URL=redis_url, LIVESTATS_GATEWAY_PORT=str(port), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@pytest.mark.parametrize("argv", [PYTHON_M, CLI], ids=["python-m", "livestats-gateway"])
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_shuts_the_gateway_down_in_phases_and_exits_0(gateway_process, sig):
    port = free_port()
    proc = gateway_process(port)
    deadline = time.monotonic() + 20
    while not port_in_use(port):  # uvicorn binds once the app's startup is complete
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the gateway did not listen within 20 s"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    # uvicorn's phases, then the app's teardown, then ours; no traceback.
    assert out.index("Shutting down") < out.index("Application shutdown complete") < out.index("gateway stopped")
    assert "Traceback" not in out
