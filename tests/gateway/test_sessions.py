"""Browser sessions: the cookie holds an opaque session id, never a token; sessions end on logout,
when their token is revoked or expires, and at their idle and absolute expiry; open WebSockets
and SSE streams of an ended session close within the re-check interval."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from livestats_shared import keys
from livestats_shared.auth import TokenStore, digest, now_ms, token_id
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SPEC = {"name": "sessions", "phases": [{"name": "generate", "calls": 1}]}


def _own(gateway) -> str:
    return f"http://127.0.0.1:{gateway.config.port}"


async def _log_in(browser: httpx.AsyncClient, gateway, token: str, **extra) -> httpx.Response:
    return await browser.post("/api/session", json={"token": token, **extra}, headers={"Origin": _own(gateway)})


async def _closed_with(ws) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(15):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def test_the_cookie_is_an_opaque_session_id_never_the_token_nor_stored_in_redis(gateway, make_token, redis):
    token = await make_token("alice", "read")
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        login = await _log_in(browser, gateway, token)
        assert login.status_code == 200, login.text
        session_id = browser.cookies["livestats_session"]
        cookie = login.headers["set-cookie"]
        assert session_id != token and token not in cookie
        assert len(session_id) >= 43  # 256 random bits
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "samesite"} <= attributes and "secure" not in attributes  # plain HTTP
        assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
        assert (await browser.get("/api/session")).json()["principal"] == "alice"
    # Nothing in Redis is a usable cookie or token: sessions are keyed by a digest.
    stored = [k async for k in redis.scan_iter(match=keys.AUTH_PREFIX + ":*")]
    assert keys.auth_session(digest(session_id)).encode() in stored  # the scan sees the session
    for key in stored:
        kind = await redis.type(key)
        values = await (redis.hgetall(key) if kind == b"hash" else redis.smembers(key))
        blob = repr(key) + repr(values)
        assert session_id not in blob and token not in blob


async def test_over_https_the_cookie_is_host_prefixed_and_secure(gateway, make_token):
    token = await make_token("alice", "read")
    https = {"X-Forwarded-Proto": "https"}  # uvicorn trusts 127.0.0.1 as a proxy
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10, headers=https) as browser:
        answer = await browser.post(
            "/api/session", json={"token": token}, headers={"Origin": f"https://127.0.0.1:{gateway.config.port}"}
        )
        assert answer.status_code == 200, answer.text
        cookie = answer.headers["set-cookie"]
        name, _, rest = cookie.partition("=")
        assert name == "__Host-livestats_session"
        assert "secure" in cookie.lower() and "path=/" in cookie.lower() and "domain" not in cookie.lower()
        session_id = rest.split(";")[0]
        # Only the cookie name of the request's scheme is read.
        sent = {"Cookie": f"__Host-livestats_session={session_id}"}
        assert (await browser.get("/api/session", headers=sent)).json()["principal"] == "alice"
        plain_name = {"Cookie": f"livestats_session={session_id}"}
        assert (await browser.get("/api/session", headers=plain_name)).status_code == 401
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as plain:
        assert (await plain.get("/api/session", headers=sent)).status_code == 401


async def _open_streams(gateway, browser: httpx.AsyncClient, run_id: str):
    """A run socket, the index socket and an SSE stream, all authenticated by the session cookie."""
    cookie = {"Cookie": f"livestats_session={browser.cookies['livestats_session']}"}
    index = await connect(f"{gateway.ws}/ws/runs", origin=_own(gateway), additional_headers=cookie)  # type: ignore[arg-type]
    run = await connect(f"{gateway.ws}/ws/runs/{run_id}", origin=_own(gateway), additional_headers=cookie)  # type: ignore[arg-type]
    assert orjson.loads(await index.recv())["type"] == "index"
    assert orjson.loads(await run.recv())["type"] == "hello"
    return index, run


async def _assert_streams_end(index, run, lines, reason: str) -> None:
    for ws in (index, run):
        assert await _closed_with(ws) == (4401, reason)
    async with asyncio.timeout(15):
        rest = [line async for line in lines]
    error = orjson.dumps({"type": "error", "code": 4401, "message": reason}).decode()
    assert rest[-3:-1] == ["event: error", f"data: {error}"]


@pytest.mark.parametrize("ending", ["logout", "token revoked"])
async def test_logout_and_token_revocation_end_the_session_everywhere(start_gateway, make_token, redis, ending):
    gateway = start_gateway(auth_recheck_s=0.2)
    token = await make_token("alice", "submit")
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        assert (await _log_in(browser, gateway, token)).status_code == 200
        session_id = browser.cookies["livestats_session"]
        run_id = (await browser.post("/api/runs", json=SPEC, headers={"Origin": _own(gateway)})).json()["run_id"]
        index, run = await _open_streams(gateway, browser, run_id)
        async with browser.stream("GET", f"/api/runs/{run_id}/stream") as sse:
            lines = sse.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            if ending == "logout":
                assert (await browser.delete("/api/session")).status_code == 204
            else:
                assert await TokenStore(redis).revoke(token_id(token))  # type: ignore[arg-type]
            await _assert_streams_end(index, run, lines, "session ended")
        # The old id is refused even when a client keeps sending it.
        stale = {"Cookie": f"livestats_session={session_id}"}
        async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as replay:
            answer = await replay.get("/api/runs", headers=stale)
        assert answer.status_code == 401 and "log in again" in answer.json()["detail"]
    assert not [k async for k in redis.scan_iter(match=keys.auth_token_sessions(token_id(token)))]  # type: ignore[arg-type]


async def test_an_expired_token_is_refused_like_a_revoked_one_and_ends_its_sessions(gateway, make_token, redis):
    token = await make_token("alice", "read")
    store = TokenStore(redis)
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        assert (await _log_in(browser, gateway, token)).status_code == 200
        assert (await browser.get("/api/session")).status_code == 200
        record = next(r for r in await store.list() if r.id == token_id(token))
        await store.save(record.model_copy(update={"expires_ms": now_ms() - 1}))
        assert (await browser.get("/api/session")).status_code == 401  # the session, at once
    async with gateway.client(token) as as_alice:
        refused = await as_alice.get("/api/runs")
    assert refused.status_code == 401 and refused.json()["detail"] == "invalid or revoked token"
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        assert (await _log_in(browser, gateway, token)).status_code == 401


async def test_a_token_with_an_expiry_works_until_then(gateway, redis):
    record, token = await TokenStore(redis).create("alice", ["read"], expires_in_s=3600)  # type: ignore[list-item]
    try:
        assert record.expires_ms is not None and record.expires_ms - record.created_ms == 3_600_000
        async with gateway.client(token) as as_alice:
            assert (await as_alice.get("/api/session")).json()["principal"] == "alice"
    finally:
        await TokenStore(redis).revoke(record.id)


@pytest.mark.parametrize("expiry", [{"session_idle_s": 1.0}, {"session_max_s": 1.0}])
async def test_a_session_ends_at_its_idle_or_absolute_expiry(start_gateway, make_token, redis, expiry):
    gateway = start_gateway(auth_recheck_s=0.2, **expiry)
    token = await make_token("alice", "read")
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        login = await _log_in(browser, gateway, token)
        assert login.status_code == 200
        cookie = {"Cookie": f"livestats_session={browser.cookies['livestats_session']}"}
        ws = await connect(f"{gateway.ws}/ws/runs", origin=_own(gateway), additional_headers=cookie)  # type: ignore[arg-type]
        assert orjson.loads(await ws.recv())["type"] == "index"

        async with asyncio.timeout(30):  # a bound for a busy machine, not a measured figure
            while True:
                if (await browser.get("/api/session")).status_code == 401:
                    break
                await asyncio.sleep(0.1)
        assert await _closed_with(ws) == (4401, "session ended")
    async with gateway.client(token) as as_alice:  # the token itself is untouched
        assert (await as_alice.get("/api/session")).status_code == 200


async def test_a_login_link_never_silently_replaces_another_principals_session(gateway, make_token):
    victim, attacker = await make_token("alice", "submit"), await make_token("mallory", "submit")
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        assert (await _log_in(browser, gateway, victim)).status_code == 200
        first = browser.cookies["livestats_session"]
        conflict = await _log_in(browser, gateway, attacker)
        assert conflict.status_code == 409, conflict.text
        body = conflict.json()
        assert (body["current"]["principal"], body["offered"]["principal"]) == ("alice", "mallory")
        assert "set-cookie" not in conflict.headers
        assert (await browser.get("/api/session")).json()["principal"] == "alice"
        # The same token again is no switch: a fresh session, the old one ended.
        assert (await _log_in(browser, gateway, victim)).status_code == 200
        second = browser.cookies["livestats_session"]
        assert second != first
        # Switching takes an explicit choice, and ends the session it replaces.
        switched = await _log_in(browser, gateway, attacker, replace=True)
        assert switched.status_code == 200 and switched.json()["principal"] == "mallory"
        assert (await browser.get("/api/session")).json()["principal"] == "mallory"
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as other:
        for old in (first, second):
            assert (await other.get("/api/session", headers={"Cookie": f"livestats_session={old}"})).status_code == 401


async def test_many_requests_write_a_tokens_last_used_time_once(gateway, make_token, redis):
    token = await make_token("alice", "read")
    tid = token_id(token)
    before = now_ms()
    async with gateway.client(token) as as_alice:
        for _ in range(20):
            assert (await as_alice.get("/api/session")).status_code == 200
    used = (await TokenStore(redis).last_used())[tid]  # type: ignore[index]
    assert used >= before
    async with gateway.client(token) as as_alice:
        assert (await as_alice.get("/api/session")).status_code == 200
    # Written at most once a minute per token per process: the later request did not write.
    assert (await TokenStore(redis).last_used())[tid] == used  # type: ignore[index]
    await redis.hdel(keys.AUTH_TOKENS_LAST_USED, tid)
