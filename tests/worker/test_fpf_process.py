"""run_fpf() against real processes: each simulator behaviour, classified, and nothing left running."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from livestats_shared.events import FailureReason
from livestats_worker.children import Sweep
from livestats_worker.fpf import STDERR_TAIL_BYTES, ProcessResult, run_fpf
from livestats_worker.output import CallVerdict, classify
from proc_util import pids_with_env

SIM = [sys.executable, "-m", "livestats_fpfsim"]
PROMPT = "Summarise the evidence for item 7 of phase generate.\n"
CAP = 64 * 1024  # max_output_bytes for these tests, bytes


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT)
    return path


def call_env(marker: str, **sim: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPF_")}
    env.update(FPF_RUN_ID=marker, FPF_PHASE="generate", FPF_CALL="7", FPF_ATTEMPT="1")
    env.update(FPF_SIM_LATENCY_MS="0", FPF_SIM_JITTER_MS="0")
    env.update({f"FPF_SIM_{key.upper()}": str(value) for key, value in sim.items()})
    return env


async def run_sim(
    prompt_file,
    marker: str,
    *,
    timeout_s: float = 10.0,
    max_output_bytes: int = CAP,
    kill_grace_s: float = 1.0,
    on_spawn: Callable[[int], None] | None = None,
    on_exit: Callable[[int], None] | None = None,
    **sim: object,
) -> ProcessResult:
    return await run_fpf(
        [*SIM, str(prompt_file)],
        env=call_env(marker, **sim),
        timeout_s=timeout_s,
        max_output_bytes=max_output_bytes,
        kill_grace_s=kill_grace_s,
        on_spawn=on_spawn,
        on_exit=on_exit,
    )


def verdict_of(result: ProcessResult, mode: str = "json", min_bytes: int = 0) -> CallVerdict:
    return classify(result, mode=mode, min_bytes=min_bytes)  # type: ignore[arg-type]


async def seen(marker: str, condition: Callable[[list[int]], bool], within_s: float = 10.0) -> list[int]:
    """Poll /proc until the processes carrying `marker` satisfy `condition`; return them."""
    deadline = time.monotonic() + within_s
    while True:
        pids = pids_with_env("FPF_RUN_ID", marker)
        if condition(pids):
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {pids} never satisfied the condition")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def background(call: Coroutine[Any, Any, ProcessResult]) -> AsyncIterator[asyncio.Task[ProcessResult]]:
    """Run `call` as a task, cancelled and awaited on the way out if the test did not finish it.

    A call still pending when the test's event loop closes would be cancelled together with
    asyncio's own pipe-connecting task, which hangs the teardown (CPython gh-125502).
    """
    task = asyncio.create_task(call)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait([task])


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def assert_nothing_left(marker: str) -> None:
    assert pids_with_env("FPF_RUN_ID", marker) == []


async def test_a_normal_answer_is_a_small_json_success_with_usage(prompt_file, marker):
    result = await run_sim(prompt_file, marker)
    verdict = verdict_of(result)

    assert (result.exit_code, result.signal, result.timed_out, result.overflow) == (0, None, False, False)
    assert verdict.ok, verdict
    assert verdict.size == 381
    assert verdict.usage is not None
    assert verdict.usage.input_tokens == math.ceil(len(PROMPT) / 4)
    assert 240 <= verdict.usage.output_tokens <= 360
    assert_nothing_left(marker)


async def test_the_callbacks_get_the_leaders_pid_at_spawn_and_after_the_group_is_gone(prompt_file, marker):
    events: list[tuple[str, int, list[int]]] = []

    def record(event: str) -> Callable[[int], None]:
        return lambda pid: events.append((event, pid, pids_with_env("FPF_RUN_ID", marker)))

    result = await run_sim(prompt_file, marker, on_spawn=record("spawn"), on_exit=record("exit"))

    assert events == [("spawn", result.pid, [result.pid]), ("exit", result.pid, [])]


@pytest.mark.parametrize(
    ("behaviour", "reason", "excerpt"),
    [
        ("empty", FailureReason.EMPTY, "no output"),
        ("binary", FailureReason.NOT_UTF8, "invalid UTF-8 at byte 0: \\xff\\xfe"),
        ("truncated", FailureReason.INVALID_JSON, ""),
        ("garbage", FailureReason.INVALID_JSON, ""),
        ("exit_json", FailureReason.EXIT_CODE, "exit code 3"),
        ("fail", FailureReason.EXIT_CODE, "exit code 1: fpf-sim: simulated failure on attempt 1"),
    ],
)
async def test_each_kind_of_bad_answer_gets_its_reason(prompt_file, marker, behaviour, reason, excerpt):
    result = await run_sim(prompt_file, marker, behaviour=behaviour)
    verdict = verdict_of(result)

    assert verdict.reason is reason, verdict
    assert verdict.excerpt.startswith(excerpt)
    assert not result.timed_out
    assert_nothing_left(marker)


async def test_text_in_another_encoding_is_not_utf8(marker):
    latin1 = "import sys; sys.stdout.buffer.write('Résumé: done'.encode('latin-1'))"

    result = await run_fpf(
        [sys.executable, "-c", latin1], env=call_env(marker), timeout_s=10, max_output_bytes=CAP, kill_grace_s=1
    )

    assert verdict_of(result, "text").excerpt == "invalid UTF-8 at byte 1: R\\xe9sum\\xe9: done"


async def test_a_crash_is_killed_and_names_sigabrt(prompt_file, marker):
    result = await run_sim(prompt_file, marker, behaviour="crash")
    verdict = verdict_of(result)

    assert result.signal == signal.SIGABRT
    assert result.exit_code is None
    assert verdict.reason is FailureReason.KILLED
    assert verdict.excerpt == "killed by SIGABRT: fpf-sim: simulated crash (abort)"


async def test_ten_megabytes_of_output_is_too_large_and_is_cut_off_at_the_cap(prompt_file, marker):
    result = await run_sim(prompt_file, marker, behaviour="huge")
    verdict = verdict_of(result)

    assert result.overflow
    assert len(result.stdout) == CAP
    # Killed by our SIGTERM part-way, not allowed to finish its 10 MiB.
    assert result.signal == signal.SIGTERM
    assert verdict.reason is FailureReason.TOO_LARGE
    assert_nothing_left(marker)


async def test_a_large_valid_answer_under_the_cap_is_a_success(prompt_file, marker):
    result = await run_sim(prompt_file, marker, behaviour="huge", huge_bytes=500_000, max_output_bytes=500_000)

    assert verdict_of(result).ok
    assert len(result.stdout) == 500_000


async def test_an_answer_one_byte_over_the_cap_is_too_large_even_after_a_clean_exit(prompt_file, marker):
    result = await run_sim(prompt_file, marker, max_output_bytes=380)

    assert result.overflow
    assert result.stdout.startswith(b'{"id": "sim-')
    assert len(result.stdout) == 380
    assert verdict_of(result).reason is FailureReason.TOO_LARGE


async def test_a_hanging_call_times_out_and_is_terminated(prompt_file, marker):
    result = await run_sim(prompt_file, marker, behaviour="hang", timeout_s=0.5)

    assert result.timed_out
    assert result.signal == signal.SIGTERM
    assert result.duration_s >= 0.5  # never before its timeout; returning at all shows it fired
    assert verdict_of(result).reason is FailureReason.TIMEOUT
    assert_nothing_left(marker)


async def test_a_timeout_kills_the_children_of_the_call_too(prompt_file, marker):
    async with background(run_sim(prompt_file, marker, behaviour="hang_with_child", timeout_s=1)) as call:
        during = await seen(marker, lambda pids: len(pids) == 2)
        result = await call

    assert len(during) == 2
    assert result.timed_out
    assert_nothing_left(marker)


async def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(prompt_file, marker):
    result = await run_sim(prompt_file, marker, behaviour="ignore_term", timeout_s=1.0, kill_grace_s=0.3)

    assert result.timed_out
    assert result.signal == signal.SIGKILL
    assert result.duration_s >= 1.0 + 0.3
    assert verdict_of(result).reason is FailureReason.TIMEOUT
    assert_nothing_left(marker)


async def test_a_child_orphaned_by_a_successful_call_is_killed_without_holding_up_the_call(prompt_file, marker):
    leader: list[int] = []
    call = run_sim(prompt_file, marker, behaviour="orphan_child", timeout_s=30, on_spawn=leader.append)
    async with background(call) as task:
        during = await seen(marker, lambda pids: bool(leader) and any(pid != leader[0] for pid in pids))
        async with asyncio.timeout(60):  # the orphan sleeps 1000 s: waiting for it would hit this
            result = await task

    assert [pid for pid in during if pid != result.pid]
    assert verdict_of(result).ok
    assert_nothing_left(marker)


async def test_cancelling_the_call_kills_its_whole_process_group(prompt_file, marker):
    exits: list[int] = []
    call = run_sim(prompt_file, marker, behaviour="hang_with_child", timeout_s=60, on_exit=exits.append)
    async with background(call) as task:
        during = await seen(marker, lambda pids: len(pids) == 2)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert len(during) == 2
    assert len(exits) == 1
    assert exits[0] in during
    assert_nothing_left(marker)


async def test_cancelling_a_call_that_ignores_sigterm_escalates_to_sigkill(prompt_file, marker):
    leader: list[int] = []
    call = run_sim(prompt_file, marker, behaviour="ignore_term", timeout_s=60, kill_grace_s=0.3, on_spawn=leader.append)
    async with background(call) as task:
        await seen(marker, lambda pids: bool(leader) and ignores_sigterm(leader[0]))

        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert time.monotonic() - started >= 0.3
    assert_nothing_left(marker)


async def test_cancelling_again_during_the_kill_does_not_stop_the_kill(prompt_file, marker):
    leader: list[int] = []
    exits: list[int] = []
    call = run_sim(
        prompt_file,
        marker,
        behaviour="ignore_term",
        timeout_s=60,
        kill_grace_s=1.0,
        on_spawn=leader.append,
        on_exit=exits.append,
    )
    async with background(call) as task:
        await seen(marker, lambda pids: bool(leader) and ignores_sigterm(leader[0]))

        task.cancel()
        await asyncio.sleep(0.1)  # the kill is now waiting out its grace period
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert pids_with_env("FPF_RUN_ID", marker) == leader  # the grace period is not over yet
    # The kill carries on in the background: the group dies and on_exit reports it.
    await seen(marker, lambda pids: not pids and exits == leader, within_s=5)


@pytest.mark.parametrize("ticks", range(8))
async def test_cancelling_the_call_while_it_starts_still_kills_its_whole_process_group(marker, ticks):
    # The shell forks its first sleep at once, possibly before run_fpf has finished starting it.
    spawned: list[int] = []
    exited: list[int] = []
    call = run_fpf(
        ["sh", "-c", "sleep 1000 & sleep 1000"],
        env=call_env(marker),
        timeout_s=60,
        max_output_bytes=CAP,
        kill_grace_s=1,
        on_spawn=spawned.append,
        on_exit=exited.append,
    )
    async with background(call) as task:
        for _ in range(ticks):
            await asyncio.sleep(0)

        task.cancel()
        # Not waiting for the grandchild to let go of the pipes, as asyncio alone would (1000 s here).
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(60):
                await task

    assert_nothing_left(marker)
    assert exited == spawned  # both callbacks, or neither if it was cancelled while starting


async def test_a_process_that_escaped_the_group_cannot_hold_up_the_call(marker):
    escape = (
        "import subprocess; subprocess.Popen(['sleep', '1000'], start_new_session=True); "
        "print('{\"answer\": 1}', flush=True)"
    )

    async with asyncio.timeout(60):  # the escaped process sleeps 1000 s: waiting for it would hit this
        result = await run_fpf(
            [sys.executable, "-c", escape], env=call_env(marker), timeout_s=600, max_output_bytes=CAP, kill_grace_s=1
        )

    assert verdict_of(result).ok
    # Without a call marker (LIVESTATS_CALL) in env, out of reach: its own session. The worker
    # always sets one (next test); the marker fixture cleans this one up.
    assert result.sweep is None
    assert len(pids_with_env("FPF_RUN_ID", marker)) == 1


async def test_with_a_call_marker_the_escaped_helpers_are_swept_and_verified_gone(tmp_path, marker):
    stand_in = Path(__file__).with_name("escaping_fpf.py")
    env = {**call_env(marker), "LIVESTATS_CALL": f"0.0/{marker}/generate/7/1/abcdef01", "FPF_SIM_BEHAVIOUR": "exit"}
    swept: list[Sweep] = []

    result = await run_fpf(
        [sys.executable, str(stand_in), str(tmp_path), "prompt"],
        env=env,
        timeout_s=30,
        max_output_bytes=CAP,
        kill_grace_s=1,
        on_swept=swept.append,
    )

    helpers = {int((tmp_path / f"{kind}.pid").read_text()) for kind in ("setsid", "daemon", "pgroup")}
    assert verdict_of(result).ok
    assert swept == [result.sweep]
    assert result.sweep is not None and result.sweep.verified
    assert helpers <= set(result.sweep.killed)  # alive when the call ended, killed by the sweep
    assert_nothing_left(marker)


async def test_stderr_keeps_only_its_last_four_kibibytes(marker):
    noisy = "import sys; sys.stderr.write('x' * 100_000 + 'THE END\\n'); sys.exit(1)"

    result = await run_fpf(
        [sys.executable, "-c", noisy], env=call_env(marker), timeout_s=10, max_output_bytes=CAP, kill_grace_s=1
    )

    assert len(result.stderr_tail) == STDERR_TAIL_BYTES
    assert result.stderr_tail.endswith(b"xxTHE END\n")


async def test_a_missing_program_is_a_spawn_error_and_nothing_is_called_back(marker):
    called: list[int] = []

    result = await run_fpf(
        ["/nonexistent/fpf"],
        env=call_env(marker),
        timeout_s=10,
        max_output_bytes=CAP,
        kill_grace_s=1,
        on_spawn=called.append,
        on_exit=called.append,
    )
    verdict = verdict_of(result)

    assert result.pid is None
    assert called == []
    assert verdict.reason is FailureReason.SPAWN_ERROR
    assert verdict.excerpt == "cannot start '/nonexistent/fpf': [Errno 2] No such file or directory: '/nonexistent/fpf'"


async def test_a_program_without_execute_permission_is_a_spawn_error(tmp_path, marker):
    script = tmp_path / "fpf"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o644)

    result = await run_fpf([str(script)], env=call_env(marker), timeout_s=10, max_output_bytes=CAP, kill_grace_s=1)

    assert verdict_of(result).reason is FailureReason.SPAWN_ERROR
    assert "Permission denied" in (result.spawn_error or "")


async def test_text_mode_applies_min_bytes_to_a_plain_text_answer(prompt_file, marker):
    result = await run_sim(prompt_file, marker, text_bytes=5000)

    assert verdict_of(result, "text", min_bytes=5000).ok
    assert verdict_of(result, "text", min_bytes=5001).reason is FailureReason.TOO_SMALL
