"""Service processes started by the launcher: own session, logged to a file, tied to us."""

from __future__ import annotations

import signal
import subprocess
import sys
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
