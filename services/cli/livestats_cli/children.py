"""Service processes started by the launcher: own session, logged to a file, tied to us."""

from __future__ import annotations

import asyncio
import http.client
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from livestats_shared.process import die_with_parent


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, so a terminal's Ctrl-C reaches only the launcher, which
    then stops its children in order. The child gets SIGTERM if the launcher dies without
    stopping it: call from a thread that lives as long as the child (the kernel ties that
    signal to the creating thread)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def stop(proc: subprocess.Popen[bytes], name: str, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop within {timeout_s:g} s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


# No proxy: a proxy from the environment (HTTP_PROXY) cannot reach our 127.0.0.1.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The status of GET `url`, None if nothing answered. Plain urllib: the CLI needs no HTTP
    client for one probe."""
    try:
        with _direct.open(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # an answer all the same (404, 503, ...)
        exc.close()
        return exc.code
    except (OSError, http.client.HTTPException):  # refused, timed out, not HTTP
        return None


async def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float, stop: asyncio.Event) -> str | None:
    """Poll `url` until it answers 200. None when it does (or `stop` was set meanwhile);
    otherwise why it never did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    status: int | None = None
    while not stop.is_set():
        status = await asyncio.to_thread(http_status, url)
        if status == 200:
            return None
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        if loop.time() > deadline:
            last = f"it answered {status}" if status is not None else "nothing answered"
            return f"did not answer {url} with 200 within {timeout_s:g} s ({last})"
        await asyncio.sleep(0.1)
    return None
