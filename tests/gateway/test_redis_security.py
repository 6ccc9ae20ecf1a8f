"""The Redis connection: TLS (`rediss://`), an ACL user with a password in REDIS_URL, and no
secret (Redis password, API token, session id) in any log line of a gateway serving real requests."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest
from livestats_cli.embedded import free_port
from livestats_shared.events import PhasePlan, RunQueued
from livestats_shared.history import read_status
from livestats_shared.ids import new_run_id
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import connect
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

SPEC = {"name": "acl", "phases": [{"name": "generate", "calls": 1}]}


@pytest.fixture
def tls_redis(tmp_path: Path):
    """Debian's redis-server (built with TLS; the embedded Valkey is not) on a free TLS port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server); .ci/run installs it")
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    args = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file)]
    args += ["--tls-auth-clients", "no", "--dir", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
    deadline = time.monotonic() + 10
    import redis as sync_redis

    while True:
        try:
            sync_redis.Redis.from_url(url).ping()
            break
        except sync_redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server with TLS did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


async def test_gateway_and_publisher_work_over_tls(tls_redis, start_gateway):
    client = connect(tls_redis, "livestats.tests.tls")
    try:
        run_id = new_run_id()
        async with Publisher(client) as publisher:
            await publisher.publish(
                run_id, RunQueued(name="tls", planned_calls=1, phases=[PhasePlan(name="g", calls=1)], timeout_s=5)
            )
        assert await read_status(client, run_id) == "queued"
        assert "ssl" in type(client.connection_pool.connection_class()).__name__.lower()
    finally:
        await client.aclose()
    gateway = start_gateway(redis_url=tls_redis)
    async with gateway.client() as http:
        assert (await http.get("/readyz")).json()["status"] == "ready"
        assert (await http.get(f"/api/runs/{run_id}")).json()["status"] == "queued"


async def test_an_acl_user_works_and_no_secret_reaches_any_log(
    start_gateway, redis, redis_url, make_token, caplog, capfd
):
    # Characters a URL must percent-encode: the URL carries `p%40ss`, the server knows `p@ss`.
    password = "s3cret-@:/%?#-" + new_run_id()
    user = "ls-" + new_run_id()
    await redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    try:
        host = redis_url.split("://", 1)[1]
        caplog.set_level(logging.DEBUG)
        gateway = start_gateway(log_level="debug", redis_url=f"redis://{user}:{quote(password, safe='')}@{host}")
        token = await make_token("alice", "submit")
        async with gateway.client(token) as http:
            run_id = (await http.post("/api/runs", json=SPEC)).json()["run_id"]
            assert (await http.get(f"/api/runs/{run_id}")).json()["owner"] == "alice"
            await http.get("/api/runs", headers={"Authorization": f"Bearer {token}x"})  # a wrong token: 401
        # A browser session: its id is as secret as a token.
        async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
            assert (await browser.post("/api/session", json={"token": token})).status_code == 200
            session_id = browser.cookies["livestats_session"]
            assert (await browser.get("/api/runs")).status_code == 200
            async with ws_connect(
                f"{gateway.ws}/ws/runs", additional_headers={"Cookie": f"livestats_session={session_id}"}
            ) as ws:
                assert orjson.loads(await ws.recv())["type"] == "index"
            assert (await browser.delete("/api/session")).status_code == 204
            assert (
                await browser.get("/api/runs", headers={"Cookie": f"livestats_session={session_id}"})
            ).status_code == 401
            await browser.get("/api/runs/a:b")  # 422
        async with ws_connect(
            f"{gateway.ws}/ws/runs",
            subprotocols=[Subprotocol("livestats.v1"), Subprotocol(f"livestats.bearer.{token}")],
        ) as ws:
            assert orjson.loads(await ws.recv())["type"] == "index"
        async with ws_connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=gateway.headers) as ws:
            assert orjson.loads(await ws.recv())["type"] == "hello"
        gateway.stop()  # joins the server's thread: every line it logged is in by now
        # A gateway with a wrong password says so, without the password.
        wrong = start_gateway(log_level="debug", redis_url=f"redis://{user}:not-{quote(password, safe='')}@{host}")
        async with wrong.client() as http:
            answer = await http.get("/readyz")
            assert answer.status_code == 503
        wrong.stop()
    finally:
        await redis.execute_command("ACL", "DELUSER", user)
    out, err = capfd.readouterr()
    # The test's own HTTP and WebSocket clients log what they send and receive; only the
    # gateway's side counts.
    client_side = ("httpx", "httpcore", "websockets.client", "hpack")
    server_lines = [caplog.handler.format(r) for r in caplog.records if not r.name.startswith(client_side)]
    logs = "\n".join(server_lines) + out + err
    assert f"GET /api/runs/{run_id}" in logs  # access logs were on: the check below is not vacuous
    assert f"{user}:***@" in logs  # the gateway logged its Redis URL, redacted
    for secret in (password, quote(password, safe=""), token, gateway.token, session_id):
        assert secret not in logs


async def test_a_percent_encoded_password_works_for_the_worker_gateway_and_cli(
    start_gateway, redis, redis_url, queue_name, make_token
):
    from helpers import livestats, wait_finished
    from livestats_worker.config import WorkerConfig
    from livestats_worker.serve import serve

    password = "p@ss:w/rd%25?#" + new_run_id()
    user = "ls-" + new_run_id()
    await redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    stop = asyncio.Event()
    worker = None
    try:
        host = redis_url.split("://", 1)[1]
        url = f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        worker = asyncio.create_task(
            serve(WorkerConfig(redis_url=url, queue_name=queue_name, heartbeat_interval_s=0.5), stop)
        )
        gateway = start_gateway(redis_url=url)
        async with gateway.client(await make_token("alice", "submit")) as http:
            quick = {"name": "acl", "phases": [{"name": "generate", "calls": 1, "env": {"FPF_SIM_LATENCY_MS": "30"}}]}
            run_id = (await http.post("/api/runs", json=quick)).json()["run_id"]
        finished = await wait_finished(redis, run_id, timeout_s=60)
        assert finished.data["outcome"] == "succeeded", finished.data
        code, out, err = await livestats(url, queue_name, "status", run_id)
        assert code == 0 and "succeeded" in out, err
        assert password not in out + err and quote(password, safe="") not in out + err
    finally:
        stop.set()
        if worker is not None:
            await asyncio.gather(worker, return_exceptions=True)
        await redis.execute_command("ACL", "DELUSER", user)
