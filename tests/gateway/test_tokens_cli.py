"""`livestats token create|revoke|list`, in Redis and in a token file, and a gateway that reads
the file: the printed token works until it is revoked, and no command ever shows a digest."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys

import orjson
import pytest
from helpers import livestats
from livestats_cli.embedded import free_port
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def test_tokens_in_redis_are_created_listed_used_and_revoked(redis_url, queue_name, start_gateway):
    gateway = start_gateway()
    code, out, err = await livestats(
        redis_url, queue_name, "token", "create", "alice", "--scope", "submit", "--team", "ml", "--json"
    )
    assert code == 0, err
    made = json.loads(out)
    token, token_id = made["token"], made["id"]
    assert token.startswith(f"lsk_{token_id}_") and "digest" not in made
    assert (made["principal"], made["scopes"], made["teams"]) == ("alice", ["submit"], ["ml"])

    async with gateway.client(token) as client:
        assert (await client.get("/api/session")).json() == {
            "principal": "alice",
            "scopes": ["submit"],
            "teams": ["ml"],
        }
    code, out, _ = await livestats(redis_url, queue_name, "token", "list", "--json")
    listed = {t["id"]: t for t in json.loads(out)}
    assert code == 0 and listed[token_id]["principal"] == "alice" and token not in out

    code, out, _ = await livestats(redis_url, queue_name, "token", "revoke", token_id)
    assert (code, out.strip()) == (0, f"revoked {token_id}")
    async with gateway.client(token) as client:
        assert (await client.get("/api/session")).status_code == 401
    code, _, err = await livestats(redis_url, queue_name, "token", "revoke", token_id)
    assert code == 3 and "no token" in err


async def test_bad_names_and_scopes_are_usage_errors(redis_url, queue_name):
    code, _, err = await livestats(redis_url, queue_name, "token", "create", "Bad Name!", "--scope", "read")
    assert code == 2 and "principal" in err
    code, _, err = await livestats(redis_url, queue_name, "token", "create", "alice", "--scope", "root")
    assert code == 2 and "invalid choice" in err


async def test_a_token_file_is_read_by_the_gateway_at_start(redis_url, queue_name, start_gateway, tmp_path):
    path = tmp_path / "tokens.json"
    code, out, err = await livestats(
        redis_url, queue_name, "token", "create", "bob", "--scope", "read", "--file", str(path)
    )
    assert code == 0, err
    token = out.strip()
    stored = path.read_text()
    assert token not in stored and "digest" in stored  # only the hash is kept
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    gateway = start_gateway(tokens_file=path)
    async with gateway.client(token) as client:
        assert (await client.get("/api/session")).json()["principal"] == "bob"
    async with gateway.client("lsk_000000000000_" + secrets.token_urlsafe(32)[:43]) as client:
        assert (await client.get("/api/session")).status_code == 401
    token_id = token.split("_")[1]
    code, _, _ = await livestats(redis_url, queue_name, "token", "revoke", token_id, "--file", str(path))
    assert code == 0 and json.loads(path.read_text())["tokens"] == []


def test_a_malformed_token_file_stops_the_gateway_from_starting(redis_url, tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVESTATS_GATEWAY_")}
    env.update(
        LIVESTATS_GATEWAY_REDIS_URL=redis_url,
        LIVESTATS_GATEWAY_PORT=str(free_port()),
        LIVESTATS_GATEWAY_TOKENS_FILE=str(path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "livestats_gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "not a livestats token file" in done.stdout + done.stderr


async def test_expiry_and_last_used_time_are_shown_by_token_list(redis_url, queue_name, start_gateway):
    gateway = start_gateway()
    code, out, err = await livestats(
        redis_url, queue_name, "token", "create", "carol", "--scope", "read", "--expires-in", "30d", "--json"
    )
    assert code == 0, err
    made = json.loads(out)
    assert made["expires_ms"] - made["created_ms"] == 30 * 86_400_000
    code, out, _ = await livestats(redis_url, queue_name, "token", "list", "--json")
    assert next(t for t in json.loads(out) if t["id"] == made["id"])["last_used_ms"] is None
    async with gateway.client(made["token"]) as client:
        assert (await client.get("/api/session")).status_code == 200
    code, out, _ = await livestats(redis_url, queue_name, "token", "list", "--json")
    listed = next(t for t in json.loads(out) if t["id"] == made["id"])
    assert listed["last_used_ms"] >= made["created_ms"]
    code, out, _ = await livestats(redis_url, queue_name, "token", "list")
    line = next(line for line in out.splitlines() if line.startswith(made["id"]))
    assert " used " in line and "never used" not in line
    assert ", expires 20" in line and made["token"] not in out
    await livestats(redis_url, queue_name, "token", "revoke", made["id"])


async def test_a_bad_expiry_is_a_usage_error(redis_url, queue_name):
    for bad in ("30", "0d", "-1h", "1w", "1.5h"):
        code, _, err = await livestats(
            redis_url, queue_name, "token", "create", "dave", "--scope", "read", f"--expires-in={bad}"
        )
        assert code == 2 and "duration" in err, (bad, err)


async def test_the_settings_admin_token_cannot_be_revoked_from_the_cli_and_it_says_why(redis_url, queue_name, tmp_path):
    for where in ((), ("--file", str(tmp_path / "tokens.json"))):
        code, out, err = await livestats(redis_url, queue_name, "token", "revoke", "settings", *where)
        assert code == 2 and out == ""
        assert "LIVESTATS_GATEWAY_ADMIN_TOKEN" in err and "restart" in err


async def test_revoking_a_file_token_takes_effect_on_a_running_gateway(redis_url, queue_name, start_gateway, tmp_path):
    path = tmp_path / "tokens.json"
    tokens = []
    for name in ("erin", "frank"):
        code, out, err = await livestats(
            redis_url, queue_name, "token", "create", name, "--scope", "read", "--file", str(path)
        )
        assert code == 0, err
        tokens.append(out.strip())
    erin, frank = tokens
    gateway = start_gateway(tokens_file=path, auth_recheck_s=0.2)
    auth = {"Authorization": f"Bearer {erin}"}
    async with connect(f"{gateway.ws}/ws/runs", additional_headers=auth) as ws:
        assert orjson.loads(await ws.recv())["type"] == "index"
        code, _, err = await livestats(
            redis_url, queue_name, "token", "revoke", erin.split("_")[1], "--file", str(path)
        )
        assert code == 0, err
        async with gateway.client(erin) as client:
            assert (await client.get("/api/session")).status_code == 401  # the next request
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4401, "token revoked")
    async with gateway.client(frank) as client:
        assert (await client.get("/api/session")).json()["principal"] == "frank"
        # A file that turns malformed refuses all its tokens (fail closed) until it is fixed.
        good = path.read_bytes()
        path.write_text("{not json")
        assert (await client.get("/api/session")).status_code == 401
        path.write_bytes(good)
        assert (await client.get("/api/session")).json()["principal"] == "frank"
    async with gateway.client() as admin:  # the settings token does not depend on the file
        assert (await admin.get("/api/session")).json()["principal"] == "admin"
