"""Reading /proc: which live processes carry a call marker, and what state a process is in.

Linux only. Another user's processes cannot be read and are skipped: FPF runs as the worker's
user, so every process of a call can be read. A zombie has no environment left, so a process
that has exited never matches a marker, whether or not its parent has reaped it yet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from livestats_shared.fpf_env import CALL_MARKER

_PREFIX = f"{CALL_MARKER}=".encode()


@dataclass(frozen=True)
class ProcStat:
    state: str  # one letter: R, S, D, Z (zombie), T, ...
    ppid: int
    pgid: int
    start_ticks: int  # clock ticks after boot: with the pid, names a process uniquely until reboot


def stat(pid: int) -> ProcStat | None:
    """The process's state, parent, group and start time; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(state=fields[0].decode(), ppid=int(fields[1]), pgid=int(fields[2]), start_ticks=int(fields[19]))


def pid_namespace() -> str:
    """The inode number of this process's PID namespace ("0" where it cannot be read)."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "0"
    return link.partition("[")[2].rstrip("]") or "0"


def markers() -> Iterator[tuple[int, bytes]]:
    """(pid, marker value) of every live process we can read that carries a call marker."""
    own = os.getpid()
    try:
        names = os.listdir("/proc")
    except FileNotFoundError:
        return  # no procfs (not Linux): nothing can be found this way
    for name in names:
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited between the listing and the read
        except PermissionError:
            continue  # another user's process: not one of ours
        for entry in environ.split(b"\0"):
            if entry.startswith(_PREFIX):
                yield int(name), entry[len(_PREFIX) :]
                break


def marked_pids(match: Callable[[bytes], bool]) -> list[int]:
    """Pids of the live processes whose marker value satisfies `match`."""
    return sorted(pid for pid, value in markers() if match(value))


def children() -> set[int]:
    """Pids of this process's children (zombies included), from every thread's children list."""
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found.update(int(pid) for pid in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return found
