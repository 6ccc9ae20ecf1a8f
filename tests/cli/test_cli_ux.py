"""The command line as its users expect it (issue 16): quiet broken pipes, one readable line and
exit code 2 for every bad input, terminal-safe output, a `runs` table, the page URL on submit,
the read commands through a gateway, `report` on runs, and progress on stderr."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time

import pytest
from helpers import livestats
from livestats_shared import keys
from livestats_shared.events import (
    CallFailed,
    CallStarted,
    CallSucceeded,
    FailureReason,
    Outcome,
    PhaseFinished,
    PhasePlan,
    PhaseStarted,
    RunFinished,
    RunQueued,
    RunStarted,
    TokenUsage,
)
from livestats_shared.ids import new_run_id


async def cli(gateway, *argv: str) -> asyncio.subprocess.Process:
    """The CLI through `gateway` only: the Redis it would use has nothing listening."""
    env = {
        **os.environ,
        "LIVESTATS_REDIS_URL": "redis://127.0.0.1:9/0",
        "LIVESTATS_GATEWAY_URL": gateway.http,
        "LIVESTATS_TOKEN": gateway.token,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestats_cli", *argv,
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def done(proc: asyncio.subprocess.Process, stdin: str | None = None) -> tuple[int, str, str]:
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin.encode() if stdin else None)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


EVIL = "evil\x1b]0;pwned\x07\x1b[2J\rname\x9b"  # retitles the window, clears the screen, CSI (C1)
FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "5"}


async def publish_run(publisher, *, name: str = "plain", calls: int = 3, predicted: int | None = 900) -> str:
    """A finished run with one phase: `calls` successes (and one failed attempt with an excerpt)."""
    run_id = new_run_id()
    phase = PhasePlan(name="gen", calls=calls, predicted_tokens=predicted)
    await publisher.publish(run_id, RunQueued(name=name, planned_calls=calls, phases=[phase], timeout_s=60))
    deadline = int(time.time() * 1000) + 60_000
    publisher.emit(run_id, RunStarted(worker="w", timeout_s=60, deadline_ts=deadline, retry_budget=3))
    publisher.emit(run_id, PhaseStarted(phase="gen", index=0, calls=calls, concurrency=1))
    publisher.emit(run_id, CallStarted(phase="gen", call=0, attempt=1))
    publisher.emit(
        run_id,
        CallFailed(
            phase="gen",
            call=0,
            attempt=1,
            reason=FailureReason.EXIT_CODE,
            excerpt=f"boom {EVIL}",
            duration_s=0.1,
            final=False,
        ),
    )
    for call in range(calls):
        attempt = 2 if call == 0 else 1
        publisher.emit(run_id, CallStarted(phase="gen", call=call, attempt=attempt))
        usage = TokenUsage(input_tokens=100, output_tokens=200)
        publisher.emit(
            run_id, CallSucceeded(phase="gen", call=call, attempt=attempt, duration_s=0.1, bytes=9, usage=usage)
        )
    publisher.emit(run_id, PhaseFinished(phase="gen", index=0, succeeded=calls, given_up=0, duration_s=1.0))
    await publisher.publish(run_id, RunFinished(outcome=Outcome.SUCCEEDED, reason="completed", elapsed_s=75.0))
    return run_id


def cli_env(redis_url: str, queue_name: str) -> dict[str, str]:
    return {**os.environ, "LIVESTATS_REDIS_URL": redis_url, "LIVESTATS_QUEUE_NAME": queue_name}


# -- broken pipes -----------------------------------------------------------------------------


async def test_export_piped_into_head_exits_quietly(redis_url, queue_name, publisher):
    run_id = await publish_run(publisher, calls=3_000)  # ~6,000 lines: far more than a pipe buffer
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "livestats_cli", "export", run_id],
        env=cli_env(redis_url, queue_name),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # `| head -1`: one line, then the reader is gone
    proc.stdout.close()
    code = await asyncio.to_thread(proc.wait, 60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert json.loads(first)["format"] == "livestats.export"
    assert code in (0, 141), (code, err)
    assert err == "", err  # no "Redis unavailable: Broken pipe", no traceback


# -- bad input: exit 2, one readable line -------------------------------------------------------


@pytest.mark.parametrize("via", ["file", "stdin", "up"])
def test_a_spec_that_is_not_utf8_is_one_line_and_exit_2(redis_url, queue_name, tmp_path, via):
    spec = tmp_path / "latin1.json"
    spec.write_bytes('{"name": "caf\xe9", "phases": [{"name": "p", "calls": 1}]}'.encode("latin-1"))
    argv = {"file": ["submit", str(spec)], "stdin": ["submit", "-"], "up": ["up", "--spec", str(spec)]}[via]
    proc = subprocess.run(
        [sys.executable, "-m", "livestats_cli", *argv],
        input=spec.read_bytes(),
        env=cli_env(redis_url, queue_name),
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-5", "5", "abc", "600001"])
def test_watch_debounce_out_of_bounds_is_refused_with_exit_2(tmp_path, value):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "livestats_cli",
            "watch",
            str(tmp_path / "s.json"),
            "--run",
            "r1",
            "--debounce-ms",
            value,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--debounce-ms" in proc.stderr and "Traceback" not in proc.stderr


async def test_run_id_through_a_gateway_is_refused_clearly_and_nothing_is_submitted(gateway, redis):
    before = await redis.zcard("livestats:runs")
    code, out, err = await done(await cli(gateway, "submit", "-", "--run-id", "mine-1"), json.dumps({"phases": []}))
    assert code == 2, (out, err)
    assert err.strip() == "error: --run-id cannot be used with a gateway, which chooses the run id itself"
    assert await redis.zcard("livestats:runs") == before


# -- terminal safety ----------------------------------------------------------------------------


async def test_control_characters_in_names_and_excerpts_are_escaped(redis_url, queue_name, publisher, redis):
    run_id = await publish_run(publisher, name=EVIL)
    # Positive control: the name is stored raw, control characters and all.
    assert (await redis.hget(keys.run_stats(run_id), "name")).decode() == EVIL
    for argv in (["status", run_id], ["runs", "--limit", "50"]):
        code, out, err = await livestats(redis_url, queue_name, *argv)
        assert code == 0, err
        assert not any(c in out for c in "\x1b\x07\r\x9b"), (argv, out)
    code, out, _ = await livestats(redis_url, queue_name, "status", run_id)
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\rname\\x9b" in out


# -- runs, submit --------------------------------------------------------------------------------


async def test_runs_prints_a_table_with_headers_start_times_and_durations(redis_url, queue_name, publisher):
    run_id = await publish_run(publisher, name="tabled")
    code, out, err = await livestats(redis_url, queue_name, "runs", "--limit", "50")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["RUN", "STATUS", "STARTED", "(UTC)"], header
    row = next(r for r in rows if r.startswith(run_id))
    assert "succeeded" in row and "1m15s" in row and "tabled" in row  # elapsed_s 75
    assert row.split()[2].count("-") == 2 and row.split()[3].count(":") == 2  # YYYY-MM-DD HH:MM:SS


async def test_submit_prints_the_page_and_wait_ends_its_last_line_on_a_terminal(redis_url, queue_name, start_worker):
    await start_worker()
    spec = json.dumps({"name": "tty", "phases": [{"name": "p", "calls": 2, "env": FAST}]})
    primary, secondary = pty.openpty()
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "livestats_cli", "submit", "-", "--wait"],
        env=cli_env(redis_url, queue_name),  # on Redis: the page is on the default gateway
        stdin=subprocess.PIPE,
        stdout=secondary,
        stderr=subprocess.STDOUT,
    )
    os.close(secondary)
    assert proc.stdin is not None
    proc.stdin.write(spec.encode())
    proc.stdin.close()
    chunks = []
    while True:
        try:
            chunk = await asyncio.to_thread(os.read, primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    out = b"".join(chunks).decode()
    run_id = out.split("submitted run ", 1)[1].split()[0]
    assert f"http://127.0.0.1:8000/runs/{run_id}" in out
    assert out.endswith("\n"), repr(out[-200:])  # the shell prompt starts on its own line


# -- through a gateway (Redis unreachable from the CLI) -----------------------------------------


async def test_status_events_and_export_work_through_a_gateway(gateway, publisher, redis_url, queue_name):
    run_id = await publish_run(publisher, name="remote-read")
    code, out, err = await done(await cli(gateway, "status", run_id, "--json"))
    assert code == 0, err
    assert json.loads(out)["successful_calls"] == 3

    code, remote_events, err = await done(await cli(gateway, "events", run_id))
    assert code == 0, err
    _, local_events, _ = await livestats(redis_url, queue_name, "events", run_id)
    assert remote_events == local_events
    assert [json.loads(line)["seq"] for line in remote_events.splitlines()] == list(range(1, 14))

    code, out, err = await done(await cli(gateway, "events", run_id, "--follow"))
    assert code == 0, err
    assert out == local_events

    code, remote_export, err = await done(await cli(gateway, "export", run_id))
    assert code == 0, err
    _, local_export, _ = await livestats(redis_url, queue_name, "export", run_id)
    assert remote_export.splitlines()[1:] == local_export.splitlines()[1:]  # the header has its own time

    code, _, err = await done(await cli(gateway, "status", "no-such-run"))
    assert code == 3, err


# -- report on runs, progress -------------------------------------------------------------------


async def test_export_shows_progress_on_stderr_when_asked(redis_url, queue_name, publisher):
    run_id = await publish_run(publisher, calls=50)
    code, out, err = await livestats(redis_url, queue_name, "export", run_id, "--progress")
    assert code == 0, err
    total = len(out.splitlines()) - 1  # the header is not an event
    assert err.strip().splitlines()[-1] == f"exported: {total:,}/{total:,} events (100 %)", err
    code, _, err = await livestats(redis_url, queue_name, "export", run_id)  # not a terminal: quiet
    assert code == 0 and err == ""


async def test_replay_shows_progress_on_stderr_when_asked(redis_url, queue_name, publisher, tmp_path):
    run_id = await publish_run(publisher, calls=20)
    exported = tmp_path / "run.ndjson"
    code, _, err = await livestats(redis_url, queue_name, "export", run_id, "-o", str(exported))
    assert code == 0, err
    total = len(exported.read_text().splitlines()) - 1
    code, out, err = await livestats(redis_url, queue_name, "replay", str(exported), "--instant", "--progress")
    assert code == 0, err
    assert err.strip().splitlines()[-1] == f"replayed: {total:,}/{total:,} events (100 %)", err
    assert f"replayed {total} events of 1 runs" in out
