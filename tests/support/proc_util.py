"""Find live processes by a marker in their environment, to prove that nothing was left running.

Tests give each spawned command a unique value (e.g. FPF_RUN_ID=<uuid>); children inherit the
environment, so every descendant carries the marker too, whatever process group it ends up in.
"""

from __future__ import annotations

import os
import signal


def pids_with_env(key: str, value: str) -> list[int]:
    """Pids of the live processes whose initial environment holds exactly `key=value`.

    Zombies count as gone: once a process has exited, reading its environ fails with ESRCH,
    whether or not its parent has reaped it yet. Linux only (reads /proc).
    """
    needle = f"{key}={value}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited (or is a zombie) between the listing and the read
        except PermissionError:
            continue  # another user's process: the processes under test all run as us
        if needle in variables:
            found.append(int(name))
    return sorted(found)


def kill_all_with_env(key: str, value: str) -> None:
    """SIGKILL whatever still carries the marker: cleanup after a failing test."""
    for pid in pids_with_env(key, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # exited since the scan


def call_markers(run_id: str) -> dict[int, str]:
    """Live processes carrying an FPF call marker (LIVESTATS_CALL) of run `run_id`: pid -> marker."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited (or a zombie), or another user's process
        for variable in variables:
            if variable.startswith(b"LIVESTATS_CALL=") and f"/{run_id}/".encode() in variable:
                found[int(name)] = variable.split(b"=", 1)[1].decode()
    return found


def kill_call_processes(run_id: str) -> None:
    """SIGKILL whatever still carries a call marker of `run_id`: cleanup after a failing test."""
    for pid in call_markers(run_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # exited since the scan
