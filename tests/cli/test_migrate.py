"""`livestats migrate`: a layout 1 database (runs with events, stats, lifecycle and a cancel flag,
tokens and sessions) upgraded in place reads back exactly through the CLI and the gateway; a
second run changes nothing; an interrupted one finishes; and the refusals (docs/keys.md)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
import uuid

import pytest
from gateway_fixtures import GatewayHandle, bearer
from helpers import livestats, wait_finished
from layout_servers import fresh_server
from livestats_cli.embedded import free_port
from livestats_gateway.config import GatewayConfig
from livestats_shared import keys
from livestats_shared.auth import Scope, TokenStore
from livestats_shared.control import cancel_run, submit_run
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from livestats_shared.sessions import SessionStore
from livestats_shared.spec import PhaseSpec, RunSpec
from livestats_worker.config import WorkerConfig
from livestats_worker.serve import serve

pytestmark = pytest.mark.slow  # a worker, gateways and CLI processes on a server of their own
FAST = {"FPF_SIM_LATENCY_MS": "20", "FPF_SIM_JITTER_MS": "5"}
EXIT_LAYOUT = 5
_SHOW = (("status", "--json"), ("events",))


class Db:
    """A server of this test's own, with what a layout 1 deployment would have stored."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.redis = connect(url, "livestats.tests")
        self.finished = ""  # a run that ran to the end
        self.cancelled = ""  # a run cancelled while queued: its cancel flag is set
        self.token = ""
        self.session = ""

    async def cli(self, *argv: str, **env: str) -> tuple[int, str, str]:
        return await livestats(self.url, self.queue, *argv, env=env)

    async def populate(self) -> None:
        stop = asyncio.Event()
        config = WorkerConfig(
            redis_url=self.url, queue_name=self.queue, heartbeat_interval_s=0.5, kill_grace_s=0.5, shutdown_grace_s=10
        )
        worker = asyncio.create_task(serve(config, stop))
        try:
            async with Publisher(self.redis) as publisher:
                spec = RunSpec(name="ran", phases=[PhaseSpec(name="generate", calls=3, env=FAST)])
                self.finished = await submit_run(self.redis, publisher, spec, queue_name=self.queue)
                await wait_finished(self.redis, self.finished)
                stop.set()
                await worker
                spec = RunSpec(name="stopped", phases=[PhaseSpec(name="generate", calls=1, env=FAST)])
                self.cancelled = await submit_run(self.redis, publisher, spec, queue_name=self.queue)
                assert await cancel_run(self.redis, publisher, self.cancelled, queue_name=self.queue) == "cancelled"
        finally:
            stop.set()
            await worker
        tokens = TokenStore(self.redis)
        record, self.token = await tokens.create("alice", [Scope.READ])
        assert await tokens.verify(self.token) is not None  # notes the use: the last-used hash
        self.session = await SessionStore(self.redis, tokens, idle_s=3600, max_s=7200).create(record)

    async def contents(self) -> dict[str, tuple[bytes, bool]]:
        """Every key: its type and whether it expires (what a migration must keep)."""
        found = {}
        async for key in self.redis.scan_iter(match="livestats:*"):
            found[key.decode()] = (await self.redis.type(key), await self.redis.pttl(key) > 0)
        return found

    async def to_layout_1(self) -> None:
        """Rename every key as layout 1 named it (and drop the record): an old deployment's data."""
        async for raw in self.redis.scan_iter(match="livestats:*"):
            key = raw.decode()
            parsed = keys.parse_run_key(key)
            if parsed is not None:
                await self.redis.rename(key, keys.legacy_run_key(*parsed))
            elif key.startswith(keys.AUTH_PREFIX + ":"):
                await self.redis.rename(key, "livestats:auth:" + key[len(keys.AUTH_PREFIX) + 1 :])
        await self.redis.delete(keys.LAYOUT)
        # The names layout 1 used, written out: the migration must find exactly these.
        for rid in (self.finished, self.cancelled):
            assert await self.redis.exists(f"livestats:run:{{{rid}}}:events", f"livestats:run:{{{rid}}}:stats") == 2
        assert await self.redis.exists(f"livestats:run:{{{self.cancelled}}}:cancel")
        assert await self.redis.exists("livestats:auth:tokens", "livestats:auth:tokens:last-used") == 2

    async def views(self, *run_ids: str, **env: str) -> dict[str, str]:
        """What the CLI shows of the runs (status as JSON, events as NDJSON); default: both."""
        argvs = [(c, rid, *o) for rid in run_ids or (self.finished, self.cancelled) for c, *o in _SHOW]
        answers = await asyncio.gather(*(self.cli(*argv, **env) for argv in argvs))
        for code, _, err in answers:
            assert code == 0, err
        return {" ".join(argv): out for argv, (_, out, _) in zip(argvs, answers, strict=True)}

    async def gateway_views(self) -> dict[str, object]:
        """What a gateway serves: both runs and their events, and the login of the token and session."""
        config = GatewayConfig(
            port=free_port(), redis_url=self.url, queue_name=self.queue, admin_token=secrets.token_urlsafe(32)
        )
        handle = GatewayHandle(config).start()
        try:
            async with handle.client() as http:
                served: dict[str, object] = {}
                for rid in (self.finished, self.cancelled):
                    for path in (f"/api/runs/{rid}", f"/api/runs/{rid}/events"):
                        answer = await http.get(path)
                        assert answer.status_code == 200, answer.text
                        served[path] = answer.json()
                answer = await http.get("/api/session", headers=bearer(self.token))
                served["token"] = answer.json()["principal"]
                http.cookies.set("livestats_session", self.session)
                answer = await http.get("/api/session", headers={"Authorization": ""})
                served["session"] = answer.json()["principal"]
            return served
        finally:
            await asyncio.to_thread(handle.stop)


@pytest.fixture
async def db(tmp_path):
    with fresh_server(tmp_path / "valkey") as server:
        made = Db(server.url, f"livestats:test-queue:{uuid.uuid4().hex[:8]}")
        try:
            yield made
        finally:
            await made.redis.aclose()


async def _service(module: str, url: str, **env: str) -> tuple[int, str]:
    """Start `python -m <module>` on `url`: (exit status, stderr) once it gives up."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module,
        env={**os.environ, "LIVESTATS_REDIS_URL": url, "LIVESTATS_GATEWAY_PORT": str(free_port()), **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_layout_1_database_migrates_in_place_and_reads_back_exactly(db):
    await db.populate()
    shown, served = await db.views(), await db.gateway_views()
    before = await db.contents()  # after a gateway started: it indexes runs for visibility once
    assert served["token"] == served["session"] == "alice"
    await db.to_layout_1()
    old = await db.contents()

    # Every entry point refuses the old layout and names the command that upgrades it.
    (code, _, err), *services = await asyncio.gather(
        db.cli("status", db.finished), *(_service(m, db.url) for m in ("livestats_worker", "livestats_gateway"))
    )
    assert code == EXIT_LAYOUT and "livestats migrate" in err, err
    for code, err in services:
        assert code == 1 and "livestats migrate" in err, err

    code, out, err = await db.cli("migrate", "--dry-run")
    assert code == 0, out + err
    assert "would rename 7 keys of 2 runs and 4 auth keys" in out  # 4 + 3 run keys (one cancel flag)
    assert await db.contents() == old  # a dry run changes nothing

    code, out, err = await db.cli("migrate")
    assert code == 0, out + err
    assert "renamed 7 keys of 2 runs and 4 auth keys" in out
    assert "now uses layout 2 with 16 partitions" in out
    after = await db.contents()
    assert after == before  # the same keys, types and expiries as a layout 2 deployment writes
    assert await db.redis.hgetall(keys.LAYOUT) == {b"version": b"2", b"partitions": b"16"}
    assert await db.views() == shown
    assert await db.gateway_views() == served

    code, out, err = await db.cli("migrate")
    assert code == 0 and "the database already uses layout 2 with 16 partitions: nothing to do" in out, out
    assert "renamed 0 keys of 0 runs and 0 auth keys" in out
    assert await db.contents() == before


async def test_an_interrupted_migration_is_refused_until_run_again(db):
    await db.populate()
    before = await db.contents()
    await db.to_layout_1()
    # Interrupted after marking the record and renaming a few keys.
    await db.redis.hset(keys.LAYOUT, "migrating", "16")
    for kind in ("events", "stats"):
        await db.redis.rename(keys.legacy_run_key(db.finished, kind), keys.run_keys(db.finished)[kind])
    code, _, err = await db.cli("runs")
    assert code == EXIT_LAYOUT and "interrupted" in err and "livestats migrate" in err, err

    code, out, err = await db.cli("migrate")
    assert code == 0, out + err
    assert "renamed 5 keys of 2 runs and 4 auth keys" in out
    assert await db.contents() == before


async def test_a_run_whose_worker_still_heartbeats_stops_the_migration(db):
    live, quiet = "still-running", "went-silent"
    now_ms = int(time.time() * 1000)
    await db.redis.hset(
        keys.legacy_run_key(live, "stats"),
        mapping={"status": "running", "heartbeat_ts": now_ms, "heartbeat_s": 60, "worker": "w1"},
    )
    await db.redis.hset(
        keys.legacy_run_key(quiet, "stats"),
        mapping={"status": "running", "heartbeat_ts": now_ms - 3_600_000, "heartbeat_s": 5},
    )
    await db.redis.zadd(keys.RUNS_ACTIVE, {live: now_ms, quiet: now_ms})

    code, out, _ = await db.cli("migrate")
    assert code == 1, out
    assert f"run {live} is running" in out and quiet not in out
    assert await db.redis.exists(keys.legacy_run_key(live, "stats")) and not await db.redis.exists(keys.LAYOUT)

    code, out, err = await db.cli("migrate", "--force")
    assert code == 0, out + err
    assert await db.redis.hget(keys.run_stats(live), "worker") == b"w1"


async def test_connected_workers_and_gateways_stop_the_migration(db):
    await db.redis.hset(keys.legacy_run_key("old-run", "stats"), "status", "succeeded")
    gateway = connect(db.url, "livestats.gateway")
    try:
        await gateway.ping()
        code, out, _ = await db.cli("migrate")
        assert code == 1 and "livestats.gateway is connected" in out, out
    finally:
        await gateway.aclose()
    workers = keys.sched_key(db.queue, "workers")
    await db.redis.zadd(workers, {"host:42": int(time.time() * 1000) + 600_000})
    code, out, _ = await db.cli("migrate")
    assert code == 1 and "worker host:42 advertises slots" in out, out
    await db.redis.delete(workers)
    code, out, err = await db.cli("migrate")
    assert code == 0, out + err
    assert await db.redis.hget(keys.run_stats("old-run"), "status") == b"succeeded"


async def test_a_key_in_the_way_is_never_overwritten(db):
    old, new = keys.legacy_run_key("r1", "stats"), keys.run_stats("r1")
    await db.redis.hset(old, "status", "succeeded")
    await db.redis.hset(new, "status", "something else")
    code, out, _ = await db.cli("migrate")
    assert code == 1 and f"{old} -> {new}" in out and "nothing overwritten" in out, out
    assert await db.redis.hget(old, "status") == b"succeeded"
    assert await db.redis.hget(new, "status") == b"something else"
    code, _, err = await db.cli("status", "r1")
    assert code == EXIT_LAYOUT and "interrupted" in err, err  # not finished: nobody may start

    await db.redis.delete(new)
    code, out, err = await db.cli("migrate")
    assert code == 0, out + err
    assert await db.redis.hget(new, "status") == b"succeeded"


async def test_another_partition_count_is_refused_everywhere_and_migrate_repartitions(db):
    await db.populate()
    shown = await db.views(db.finished)
    (cli_code, _, cli_err), *services = await asyncio.gather(
        db.cli("status", db.finished, LIVESTATS_PARTITIONS="8"),
        *(_service(m, db.url, LIVESTATS_PARTITIONS="8") for m in ("livestats_worker", "livestats_gateway")),
    )
    assert cli_code == EXIT_LAYOUT, cli_err
    for code, err in [(cli_code, cli_err), *services]:
        assert code in (1, EXIT_LAYOUT) and "in 16 partitions" in err and "LIVESTATS_PARTITIONS=8" in err, err

    code, out, err = await db.cli("migrate", LIVESTATS_PARTITIONS="8")
    assert code == 0, out + err
    assert await db.redis.hgetall(keys.LAYOUT) == {b"version": b"2", b"partitions": b"8"}
    code, out, err = await db.cli("keys", db.finished, "--json", LIVESTATS_PARTITIONS="8")
    assert code == 0, err
    names = json.loads(out)
    assert names["partitions"] == 8 and names["partition"] < 8
    assert await db.redis.exists(*names["keys"].values()) == 3  # events, stats, lifecycle; no cancel flag
    assert await db.views(db.finished, LIVESTATS_PARTITIONS="8") == shown
