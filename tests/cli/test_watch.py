"""`livestats watch`: a status file written by an orchestrator becomes phase events of an
external run, published through a real gateway; only real changes are published."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from livestats_shared.history import read_events

EXTERNAL = {"name": "shell", "external": True, "phases": [{"name": "plan", "calls": 1}, {"name": "build", "calls": 1}]}


class Watch:
    """`livestats watch` in a subprocess; its notes (stderr) are read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.notes: list[str] = []

    async def until(self, text: str, timeout_s: float = 20) -> str:
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"watch exited before {text!r}; it said {self.notes}")
                self.notes.append(line.strip())
                if text in line:
                    return line

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            rest = await self.proc.stderr.read()
            self.notes += rest.decode().splitlines()
            return await self.proc.wait()


async def start_watch(gateway, *argv: str, token: str | None = None) -> Watch:
    env = {**os.environ, "LIVESTATS_GATEWAY_URL": gateway.http, "LIVESTATS_TOKEN": token or gateway.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livestats_cli", "watch", *argv, "--debounce-ms", "50",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return Watch(proc)


def write(path, content: str) -> None:
    # As an orchestrator would: write a temporary file, then rename it over the status file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content)
    os.replace(tmp, path)


async def test_only_real_changes_are_published_and_a_malformed_file_is_survived(start_gateway, redis, tmp_path):
    gateway = start_gateway()
    async with gateway.client() as http:
        run_id = (await http.post("/api/runs", json=EXTERNAL)).json()["run_id"]
        # The orchestrator starts its run (the gate takes phases of a running run only).
        started = {"worker": "shell", "timeout_s": 600, "deadline_ts": 0, "retry_budget": 0, "heartbeat_s": 3600}
        answer = await http.post(
            f"/api/runs/{run_id}/events", json={"events": [{"type": "run.started", "data": started}]}
        )
        assert answer.status_code == 200, answer.text
    status = tmp_path / "current-phase.json"
    watch = await start_watch(gateway, str(status), "--run", run_id, "--json")
    try:
        await watch.until("watching")
        plan = {"phase": "plan", "status": "running", "calls": 1}
        write(status, json.dumps(plan))
        await watch.until("published phase.started plan")
        for n in range(2):  # the same content twice more, once with other whitespace and key order
            status.write_text(json.dumps(dict(reversed(plan.items())), indent=n))
            await watch.until("unchanged")
        status.write_text('{"phase": "plan", "status": ')
        await watch.until("malformed status file")
        write(status, json.dumps({"phase": "build", "status": "running", "calls": 1}))
        await watch.until("published phase.started build")
    finally:
        code = await watch.stop()
    assert code == 0, watch.notes
    events = [e for e in await read_events(redis, run_id) if e.type.startswith("phase.")]
    assert [(e.type, e.data["phase"], e.data["index"]) for e in events] == [
        ("phase.started", "plan", 0),
        ("phase.started", "build", 1),
    ]
    published = [json.loads(line) for line in (await watch.proc.stdout.read()).decode().splitlines()]
    assert [p["seq"] for p in published] == [e.seq for e in events]


async def test_watching_an_unknown_run_stops_with_exit_code_3(start_gateway, tmp_path):
    gateway = start_gateway()
    status = tmp_path / "current-phase.json"
    status.write_text(json.dumps({"phase": "plan", "status": "running"}))
    watch = await start_watch(gateway, str(status), "--run", "no-such-run")
    async with asyncio.timeout(20):
        code = await watch.proc.wait()  # it stops by itself: retrying cannot make the run exist
    assert code == 3
    assert "404" in (await watch.proc.stderr.read()).decode()


async def test_a_token_the_gateway_refuses_stops_watch_with_exit_code_1(start_gateway, tmp_path):
    gateway = start_gateway()
    async with gateway.client() as http:
        run_id = (await http.post("/api/runs", json=EXTERNAL)).json()["run_id"]
    status = tmp_path / "current-phase.json"
    status.write_text(json.dumps({"phase": "plan", "status": "running"}))
    watch = await start_watch(gateway, str(status), "--run", run_id, token="lsk_0123456789ab_wrong")
    async with asyncio.timeout(20):
        code = await watch.proc.wait()
    assert code == 1
    assert "401" in (await watch.proc.stderr.read()).decode()


async def test_a_restarted_watch_publishes_nothing_again_and_a_failed_phase_ends_failed(start_gateway, redis, tmp_path):
    gateway = start_gateway()
    async with gateway.client() as http:
        run_id = (await http.post("/api/runs", json=EXTERNAL)).json()["run_id"]
        # The orchestrator starts its run (the gate takes phases of a running run only).
        started = {"worker": "shell", "timeout_s": 600, "deadline_ts": 0, "retry_budget": 0, "heartbeat_s": 3600}
        answer = await http.post(
            f"/api/runs/{run_id}/events", json={"events": [{"type": "run.started", "data": started}]}
        )
        assert answer.status_code == 200, answer.text
    status = tmp_path / "current-phase.json"
    write(status, json.dumps({"phase": "plan", "status": "running", "calls": 2}))
    watch = await start_watch(gateway, str(status), "--run", run_id)
    try:
        await watch.until("published phase.started plan")
        write(status, json.dumps({"phase": "plan", "status": "failed"}))
        await watch.until("published phase.finished plan")
    finally:
        assert await watch.stop() == 0, watch.notes
    before = [e for e in await read_events(redis, run_id) if e.type.startswith("phase.")]
    assert [(e.type, e.data.get("state")) for e in before] == [("phase.started", None), ("phase.finished", "failed")]
    assert before[-1].data["given_up"] == 1

    again = await start_watch(gateway, str(status), "--run", run_id)  # the same file, read anew
    try:
        await again.until("unchanged: phase plan failed")
        write(status, json.dumps({"phase": "build", "status": "running", "calls": 1}))
        await again.until("published phase.started build")
    finally:
        assert await again.stop() == 0, again.notes
    after = [e for e in await read_events(redis, run_id) if e.type.startswith("phase.")]
    assert after[: len(before)] == before
    assert [(e.type, e.data["phase"]) for e in after[len(before) :]] == [("phase.started", "build")]
    async with gateway.client() as http:
        phases = {p["name"]: p for p in (await http.get(f"/api/runs/{run_id}")).json()["phases"]}
    assert phases["plan"]["state"] == "failed"
