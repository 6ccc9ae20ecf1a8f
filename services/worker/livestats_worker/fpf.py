"""Run one FPF subprocess so that nothing it starts outlives the call.

The child starts a new session, so it leads its own process group, and every way out of
`run_fpf` (normal exit, timeout, output overflow, cancellation, a callback raising) ends with
SIGKILL to that whole group, then to every process still carrying the call's marker
(`LIVESTATS_CALL` in `env`; children.py): descendants that left the group with `setsid`,
`setpgid` or a double fork. Cancellation matters most: arq's job timeout and a run's
cancellation only cancel the coroutine, and nothing else would stop the children.

The pipes are read through a `SubprocessProtocol` rather than `create_subprocess_exec`'s
stream readers: data is taken as it arrives and never paused, so output past the cap is
dropped instead of buffered, and the transport can always be closed through public API,
even when a process that escaped the group keeps a pipe open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from livestats_shared.fpf_env import CALL_MARKER
from livestats_shared.process import die_with_parent

from .children import SPAWNED, Sweep, kill_marked

logger = logging.getLogger(__name__)

STDERR_TAIL_BYTES = 4096  # bytes of stderr kept; the end of a traceback says what went wrong
PIPE_DRAIN_S = 0.5  # seconds the pipes may stay open once the leader is gone before we stop waiting
REAP_TIMEOUT_S = 5.0  # seconds to wait for the leader after SIGKILL; only a process stuck in the kernel is slower

# Cleanups that must finish even if the caller is cancelled again while waiting for them; the
# event loop keeps only weak references to tasks.
_CLEANUPS: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class ProcessResult:
    """How one FPF process ended. Read `spawn_error`, then `timed_out`/`overflow`, then the status."""

    exit_code: int | None  # the leader's exit status if it exited by itself; None if a signal ended it
    signal: int | None  # the signal that ended the leader (ours after a timeout or overflow)
    stdout: bytes  # the first max_output_bytes bytes of stdout; anything past the cap was discarded
    stderr_tail: bytes  # the last STDERR_TAIL_BYTES bytes of stderr
    overflow: bool  # stdout went past max_output_bytes and the group was killed
    timed_out: bool  # the leader had not exited after timeout_s and the group was killed
    spawn_error: str | None  # why the command could not be started; every other field is empty then
    duration_s: float  # from spawn until the group was gone and the pipes closed
    pid: int | None  # the leader's pid, which is also the process group id
    sweep: Sweep | None = None  # the marker sweep after the group kill; None without a marker in env


async def run_fpf(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
    max_output_bytes: int,
    kill_grace_s: float,
    on_spawn: Callable[[int], None] | None = None,
    on_exit: Callable[[int], None] | None = None,
    on_swept: Callable[[Sweep], None] | None = None,
) -> ProcessResult:
    """Run `argv` in its own process group and collect its output, within `timeout_s`.

    A timeout or an overflow kills the group: SIGTERM, up to `kill_grace_s` for the leader to
    exit, then SIGKILL. Whatever happens, SIGKILL then goes to the group once more, so no
    descendant outlives the call; with a marker in `env`, so do the processes that carry it
    outside the group, and `on_swept(sweep)` says whether a re-scan found them all gone (it runs
    on cancellation too). `on_spawn(pid)` runs right after the start and `on_exit(pid)`
    once the group is gone; both should be quick and not raise (if they do, the group is still
    killed and the exception propagates); a call cancelled while still starting gets neither.
    A command that cannot be started is reported in `spawn_error`, not raised. On cancellation
    the group is killed, then CancelledError re-raised.
    """
    if not argv:
        raise ValueError("argv must name a program to run")
    if timeout_s <= 0 or max_output_bytes < 0 or kill_grace_s < 0:
        raise ValueError(
            f"need timeout_s > 0, max_output_bytes >= 0 and kill_grace_s >= 0; got "
            f"{timeout_s}, {max_output_bytes}, {kill_grace_s}"
        )
    started = time.monotonic()
    swept: list[Sweep] = []
    marker = env.get(CALL_MARKER)

    def record(sweep: Sweep) -> None:
        swept.append(sweep)
        if on_swept is not None:
            on_swept(sweep)

    spawn = asyncio.create_task(_spawn(argv, env, max_output_bytes))
    try:
        transport, collector = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # Interrupted half-way, asyncio kills only the leader and then waits for every holder
        # of its pipes to exit, however long that takes (CPython gh-133536). Let the spawn
        # finish instead, then kill the whole group like any other call.
        await _shielded(_kill_spawned(spawn, kill_grace_s, marker, record))
        raise
    except (OSError, ValueError) as exc:
        # OSError: missing program, no execute permission, fork limits. ValueError: a NUL byte
        # in argv or env. Either way nothing started, and retrying would not help.
        return ProcessResult(
            exit_code=None,
            signal=None,
            stdout=b"",
            stderr_tail=b"",
            overflow=False,
            timed_out=False,
            spawn_error=f"cannot start {argv[0]!r}: {exc}",
            duration_s=time.monotonic() - started,
            pid=None,
            sweep=None,
        )
    pid = transport.get_pid()
    in_time = False
    try:
        if on_spawn is not None:
            on_spawn(pid)
        in_time = await _leader_exit_or_overflow(collector, timeout_s)
    finally:
        await _shielded(_finish(transport, collector, pid, kill_grace_s, on_exit, marker, record))

    returncode = transport.get_returncode()
    return ProcessResult(
        exit_code=returncode if returncode is not None and returncode >= 0 else None,
        signal=-returncode if returncode is not None and returncode < 0 else None,
        stdout=bytes(collector.stdout),
        stderr_tail=bytes(collector.stderr[-STDERR_TAIL_BYTES:]),
        overflow=collector.overflowed.done(),
        timed_out=not in_time,
        spawn_error=None,
        duration_s=time.monotonic() - started,
        pid=pid,
        sweep=swept[0] if swept else None,
    )


async def _spawn(
    argv: Sequence[str], env: Mapping[str, str], max_output_bytes: int
) -> tuple[asyncio.SubprocessTransport, _Collector]:
    transport, collector = await asyncio.get_running_loop().subprocess_exec(
        lambda: _Collector(max_output_bytes),
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # If the worker itself is killed (SIGKILL, OOM), its calls must not run on and spend.
        preexec_fn=die_with_parent(signal.SIGKILL),
        env=dict(env),
    )
    # asyncio waits for the leader; the worker's orphan reaping must leave its status alone.
    SPAWNED.add(transport.get_pid())
    return transport, collector


async def _kill_spawned(
    spawn: asyncio.Task[tuple[asyncio.SubprocessTransport, _Collector]],
    grace_s: float,
    marker: str | None,
    on_swept: Callable[[Sweep], None],
) -> None:
    """Kill what a spawn started once it completes; the caller was cancelled before on_spawn."""
    try:
        transport, collector = await spawn
    except (OSError, ValueError):
        return  # nothing was started, so nothing is left to kill
    await _finish(transport, collector, transport.get_pid(), grace_s, None, marker, on_swept)


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the first `max_output_bytes` of stdout and the tail of stderr; never pauses reading."""

    def __init__(self, max_output_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflowed: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._cap = max_output_bytes
        self._open_pipes = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            room = self._cap - len(self.stdout)
            if len(data) <= room:
                self.stdout += data
            elif not self.overflowed.done():
                self.stdout += data[:room]
                self.overflowed.set_result(None)
        elif fd == 2:
            self.stderr += data
            # Trim only when twice the tail is held, so a chatty stderr costs amortised O(1) per byte.
            if len(self.stderr) > 2 * STDERR_TAIL_BYTES:
                del self.stderr[:-STDERR_TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if exc is not None:
            logger.warning("reading fd %d of an FPF process failed: %s", fd, exc)
        self._open_pipes.discard(fd)
        if not self._open_pipes and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def _leader_exit_or_overflow(collector: _Collector, timeout_s: float) -> bool:
    """Wait until the leader exits or stdout overflows; False if `timeout_s` passed first."""
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.wait((collector.exited, collector.overflowed), return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        return False
    return True


async def _finish(
    transport: asyncio.SubprocessTransport,
    collector: _Collector,
    pgid: int,
    grace_s: float,
    on_exit: Callable[[int], None] | None,
    marker: str | None,
    on_swept: Callable[[Sweep], None] | None,
) -> None:
    """Make sure the whole group and every marked process are gone, release the pipes, then
    report the sweep and the exit."""
    sweep: Sweep | None = None
    try:
        if collector.exited.done():
            # The leader is gone; a descendant may still hold the pipes. Give it a moment to finish.
            await _wait(collector.pipes_closed, PIPE_DRAIN_S)
        else:
            await _terminate(pgid, collector.exited, grace_s)
        # Even after a clean exit: orphaned grandchildren would run on and keep burning tokens.
        _signal_group(pgid, signal.SIGKILL)
        if marker is not None:
            # What left the group (setsid, setpgid, a double fork) still carries the marker.
            needle = marker.encode()
            sweep = await asyncio.to_thread(kill_marked, needle.__eq__, keep=(pgid,))
        # Now only an unmarked process outside the group can hold a pipe; we cannot find it, so
        # stop waiting for it after a moment.
        if not await _wait(collector.pipes_closed, PIPE_DRAIN_S):
            logger.warning("FPF process group %d: a process outside the group still holds its pipes", pgid)
    finally:
        transport.close()
        if collector.exited.done():  # asyncio has reaped the leader; until then it is not ours to reap
            SPAWNED.discard(pgid)
    if sweep is not None and on_swept is not None:
        on_swept(sweep)
    if on_exit is not None:
        on_exit(pgid)


async def _terminate(pgid: int, leader_exited: asyncio.Future[None], grace_s: float) -> None:
    """SIGTERM the group, give the leader `grace_s` to exit, then SIGKILL the group and reap it."""
    _signal_group(pgid, signal.SIGTERM)
    if await _wait(leader_exited, grace_s):
        return
    _signal_group(pgid, signal.SIGKILL)
    if not await _wait(leader_exited, REAP_TIMEOUT_S):
        logger.warning("FPF process %d has not exited %.0f s after SIGKILL", pgid, REAP_TIMEOUT_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # A group id stays reserved while any member lives. Once the group is empty, reaching an
    # unrelated group would need the pid recycled as a new group leader since the leader was
    # reaped moments ago; ESRCH is what we get.
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        # Nobody is left in the group: everything already exited, which is the goal.
        return


async def _wait(future: asyncio.Future[None], timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `future` without cancelling it; True if it completed."""
    if future.done():
        return True
    done, _ = await asyncio.wait((future,), timeout=timeout_s)
    return bool(done)


async def _shielded(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run `cleanup` to completion even if the caller is cancelled while it runs."""
    task = asyncio.create_task(cleanup)
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    await asyncio.shield(task)
