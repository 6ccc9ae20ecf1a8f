"""Finding and killing every process of an FPF call, wherever it went (docs/processes.md).

Each call's processes carry an environment marker, `LIVESTATS_CALL=<worker>/<run>/<phase>/
<call>/<attempt>/<nonce>`, which every descendant inherits whatever session or process group it
moves to. `<worker>` is `<pid namespace>.<pid>.<start ticks>` of the worker process: unique on the
host until it reboots, so a later worker can tell which markers belong to a worker that is gone.

The worker is also a child subreaper: orphaned descendants (a double-forked daemon, a `setsid`
child whose parent exited) are re-parented to it rather than to init, so it reaps them. It reaps
only pids it knows are not asyncio's children, never with waitpid(-1): asyncio's child watcher
(ThreadedChildWatcher on 3.11, one thread blocked in waitpid(pid) per child; PidfdChildWatcher
on 3.12+) must get its own children's exit statuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import procscan

log = logging.getLogger("livestats.worker")

SWEEP_WITHIN_S = 2.0  # how long a sweep keeps killing and re-scanning before it reports survivors
_RESCAN_S = 0.01  # pause between a round of SIGKILLs and the re-scan that verifies them
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

# Pids this process started itself (FPF leaders, the reaper): asyncio or Popen waits for them,
# so the orphan reaping below must never take their exit statuses. Process-wide, like the
# subreaper flag and the children list it protects.
SPAWNED: set[int] = set()


@dataclass(frozen=True)
class Sweep:
    """What a sweep did: processes it sent SIGKILL, and those still alive when it gave up."""

    killed: tuple[int, ...]
    survivors: tuple[int, ...]  # empty: a re-scan after the SIGKILLs found none left

    @property
    def verified(self) -> bool:
        return not self.survivors


_TAG: tuple[int, str] | None = None


def worker_tag() -> str:
    """`<pid namespace>.<pid>.<start ticks>` of this process, the first field of its calls'
    markers. The namespace matters: a host's /proc also lists the processes of its containers,
    whose markers carry pids of another namespace."""
    global _TAG
    pid = os.getpid()
    if _TAG is None or _TAG[0] != pid:  # recomputed in a forked child
        own = procscan.stat(pid)
        _TAG = (pid, f"{procscan.pid_namespace()}.{pid}.{own.start_ticks if own else 0}")
    return _TAG[1]


def call_marker(run_id: str, phase: str, call: int, attempt: int) -> str:
    """A fresh marker value for one attempt; the nonce keeps a redelivered run's apart."""
    return f"{worker_tag()}/{run_id}/{phase}/{call}/{attempt}/{uuid.uuid4().hex[:8]}"


def kill_marked(match: Callable[[bytes], bool], *, keep: Iterable[int] = (), within_s: float = SWEEP_WITHIN_S) -> Sweep:
    """SIGKILL every live process whose marker satisfies `match`, and its process group, until a
    re-scan finds none or `within_s` passes. Blocking: call it in a thread from async code.

    A killed process cannot fork again, so each round finds only what was forked before the
    previous round's SIGKILL landed. Orphans re-parented to us are reaped; `keep` lists pids
    someone else waits for (the call's leader, which asyncio reaps).
    """
    kept = set(keep)
    killed: set[int] = set()
    deadline = time.monotonic() + within_s
    while True:
        alive = procscan.marked_pids(match)
        for pid in alive:
            _kill_with_group(pid)
        killed.update(alive)
        if alive and time.monotonic() < deadline:
            time.sleep(_RESCAN_S)
            continue
        reap(killed - kept)
        return Sweep(killed=tuple(sorted(killed)), survivors=tuple(alive))


def _kill_with_group(pid: int) -> None:
    info = procscan.stat(pid)
    # Its group may hold members that dropped the marker (exec with a clean environment). A
    # group never spans sessions, and FPF runs in a session of its own, so this group is never
    # the worker's; the check guards against a misread all the same.
    if info is not None and info.pgid > 1 and info.pgid != os.getpgrp():
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(info.pgid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # it exited since the scan: the goal
        os.kill(pid, signal.SIGKILL)


def reap(pids: Iterable[int]) -> list[int]:
    """Reap those of `pids` that are zombie children of ours and not ours to leave (SPAWNED)."""
    own = os.getpid()
    reaped = []
    for pid in pids:
        if pid in SPAWNED:
            continue
        info = procscan.stat(pid)
        if info is None or info.ppid != own or info.state != "Z":
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # reaped by someone else between the check and the wait
        reaped.append(pid)
    return reaped


class OrphanReaper:
    """Reaps orphans that ended on their own: zombie children of ours that nobody waits for.

    A zombie counts as an orphan only when two passes in a row saw it and it is not in SPAWNED:
    asyncio reaps its own children within milliseconds of their exit, never a whole pass later.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def pass_once(self) -> list[int]:
        zombies = {pid for pid in procscan.children() if (info := procscan.stat(pid)) and info.state == "Z"}
        ready, self._seen = (zombies & self._seen) - SPAWNED, zombies
        return reap(ready)


def _prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


def subreaper(enable: bool | None = None) -> bool | None:
    """Read (enable=None) or set this process's child-subreaper flag; None where unsupported
    (not Linux): there orphans go to init and only the marker scan finds them."""
    prctl = _prctl()
    if prctl is None:
        return None
    if enable is None:
        flag = ctypes.c_int(0)
        if prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
            return None
        return bool(flag.value)
    if prctl(_PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
        log.warning("cannot set the child-subreaper flag: %s", os.strerror(ctypes.get_errno()))
        return None
    return enable
