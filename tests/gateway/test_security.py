"""Who may see and steer which run: every route and socket against missing, wrong, revoked and
under-scoped tokens; principals isolated from each other; origins; run-id injection."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from helpers import eventually, wait_until
from livestats_shared.auth import TokenStore, token_id
from livestats_shared.ids import new_run_id
from starlette.routing import Mount
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol
from ws_client import publish_run

SPEC = {"name": "secure", "phases": [{"name": "generate", "calls": 1}]}
# Routes anyone may call: liveness, readiness, metrics, logging in, the login page, the API description.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/api/session"),
    ("DELETE", "/api/session"),
    ("GET", "/login"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/metrics"),  # Prometheus: aggregates only, no run ids, users or messages in any label
    # The dashboard's app shell: no data in it; it gets everything from the API with credentials.
    ("GET", "/"),
    ("GET", "/runs/{run_id}"),
    ("GET", "/compare"),
}
MOUNTS = {"/static"}  # the dashboard's assets (tests/gateway/test_pages.py)
# Every other route, the least scope it needs, and a body.
PROTECTED = {
    ("GET", "/api/session"): ("read", None),
    ("GET", "/api/runs"): ("read", None),
    ("POST", "/api/runs"): ("submit", SPEC),
    ("GET", "/api/runs/{run_id}"): ("read", None),
    ("GET", "/api/runs/{run_id}/events"): ("read", None),
    ("GET", "/api/runs/{run_id}/stream"): ("read", None),
    ("POST", "/api/runs/{run_id}/cancel"): ("submit", None),
    ("POST", "/api/runs/{run_id}/events"): ("submit", {"events": [{"type": "heartbeat", "data": {}}]}),
    ("GET", "/api/runs/{run_id}/estimation"): ("read", None),
    ("GET", "/api/estimation"): ("read", None),
    ("GET", "/api/compare"): ("read", None),
    ("GET", "/api/calibration"): ("read", None),
    ("GET", "/api/calibration/predict"): ("read", None),
    ("GET", "/api/prices"): ("read", None),
}
SOCKETS = ("/ws/runs", "/ws/runs/{run_id}")


def _id_of(token: str) -> str:
    tid = token_id(token)
    assert tid is not None, "a token minted by the store has an id"
    return tid


def _routes(app) -> list:
    """Every route, also inside included routers (FastAPI keeps those as wrappers)."""
    out = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        out.extend(_routes(inner) if inner is not None else [route])
    return out


def _http_routes(app) -> set[tuple[str, str]]:
    return {(m, r.path) for r in _routes(app) if hasattr(r, "methods") for m in r.methods if m != "HEAD"}


async def _ws_close(url: str, **kwargs) -> int | None:
    """The close code the gateway ends the connection with, before sending any data frame."""
    async with connect(url, open_timeout=10, **kwargs) as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    frame = orjson.loads(await ws.recv())
                    assert frame["type"] != "events", "a refused client received events"
    return ws.close_code


async def _ws_first(url: str, **kwargs) -> dict:
    async with connect(url, open_timeout=10, **kwargs) as ws:
        return orjson.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_every_route_is_either_public_or_protected_by_this_table(gateway):
    app = gateway.server.config.app
    assert _http_routes(app) == PUBLIC | set(PROTECTED)
    assert {r.path for r in _routes(app) if isinstance(r, Mount)} == MOUNTS
    assert {r.path for r in _routes(app) if not hasattr(r, "methods") and not isinstance(r, Mount)} == set(SOCKETS)


async def test_every_route_and_socket_refuses_missing_wrong_revoked_and_underscoped_tokens(
    gateway, publisher, make_token, redis
):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    revoked = await make_token("mallory", "admin")
    assert await TokenStore(redis).revoke(_id_of(revoked))
    reader = await make_token("reader", "read")
    wrong = "lsk_000000000000_" + "A" * 43
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as anonymous:
        for (method, path), (scope, body) in PROTECTED.items():
            url = path.format(run_id=run_id)
            for headers, why in (({}, "none"), ({"Authorization": f"Bearer {wrong}"}, "wrong")):
                answer = await anonymous.request(method, url, json=body, headers=headers)
                assert answer.status_code == 401, (method, path, why, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
            answer = await anonymous.request(method, url, json=body, headers={"Authorization": f"Bearer {revoked}"})
            assert answer.status_code == 401, (method, path, "revoked")
            if scope != "read":
                answer = await anonymous.request(method, url, json=body, headers={"Authorization": f"Bearer {reader}"})
                assert answer.status_code == 403, (method, path, "read scope", answer.text)
                assert "submit" in answer.json()["detail"]
    for path in SOCKETS:
        url = gateway.ws + path.format(run_id=run_id)
        assert await _ws_close(url) == 4401
        assert await _ws_close(url, additional_headers={"Authorization": f"Bearer {wrong}"}) == 4401
        assert await _ws_close(url, additional_headers={"Authorization": f"Bearer {revoked}"}) == 4401
    # Every token has at least `read`, which is all a socket needs: the smallest scope gets in
    # (and is told the unowned run does not exist, as for any run it may not see).
    reader_auth = {"Authorization": f"Bearer {reader}"}
    assert (await _ws_first(f"{gateway.ws}/ws/runs", additional_headers=reader_auth))["type"] == "index"
    assert await _ws_close(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=reader_auth) == 4404


async def test_a_principal_cannot_read_stream_replay_or_cancel_another_principals_run(gateway, make_token):
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with gateway.client(alice) as as_alice, gateway.client(bob) as as_bob:
        run_id = (await as_alice.post("/api/runs", json=SPEC)).json()["run_id"]
        assert (await as_alice.get(f"/api/runs/{run_id}")).json()["owner"] == "alice"
        unknown = new_run_id()
        for path in ("", "/events", "/stream"):
            mine = await as_bob.get(f"/api/runs/{unknown}{path}")
            theirs = await as_bob.get(f"/api/runs/{run_id}{path}")
            # Indistinguishable from a run that does not exist (apart from the id in the text).
            assert (theirs.status_code, mine.status_code) == (404, 404), path
            assert theirs.json()["detail"].replace(run_id, "X") == mine.json()["detail"].replace(unknown, "X")
        assert (await as_bob.post(f"/api/runs/{run_id}/cancel")).status_code == 404
        assert (await as_alice.get(f"/api/runs/{run_id}")).json()["status"] == "queued"  # not cancelled
        assert run_id not in [r["run_id"] for r in (await as_bob.get("/api/runs")).json()["runs"]]
        assert run_id in [r["run_id"] for r in (await as_alice.get("/api/runs")).json()["runs"]]
    bob_headers = {"Authorization": f"Bearer {bob}"}
    assert await _ws_close(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=bob_headers) == 4404
    index = await _ws_first(f"{gateway.ws}/ws/runs", additional_headers=bob_headers)
    assert run_id not in [r["run_id"] for r in index["runs"]]


async def test_the_run_index_socket_streams_only_the_principals_runs(gateway, make_token):
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with connect(f"{gateway.ws}/ws/runs", additional_headers={"Authorization": f"Bearer {bob}"}) as ws:
        assert orjson.loads(await ws.recv())["type"] == "index"
        assert orjson.loads(await ws.recv())["type"] == "live"
        async with gateway.client(alice) as as_alice, gateway.client(bob) as as_bob:
            hidden = (await as_alice.post("/api/runs", json=SPEC)).json()["run_id"]
            shown = (await as_bob.post("/api/runs", json=SPEC)).json()["run_id"]
        seen: set[str] = set()
        async with asyncio.timeout(10):
            while shown not in seen:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "runs":
                    seen.update(r["run_id"] for r in frame["runs"])
        assert hidden not in seen  # alice's run was queued first: its update came before bob's


async def test_runs_shared_with_a_team_are_visible_to_its_members_only(gateway, make_token):
    alice = await make_token("alice", "submit", teams=["ml"])
    carol, dave = await make_token("carol", "read", teams=["ml"]), await make_token("dave", "read", teams=["ops"])
    async with gateway.client(alice) as as_alice, gateway.client(carol) as as_carol, gateway.client(dave) as as_dave:
        refused = await as_alice.post("/api/runs", json=SPEC, params={"team": "ops"})
        assert refused.status_code == 422 and "not in team" in refused.text
        run_id = (await as_alice.post("/api/runs", json=SPEC, params={"team": "ml"})).json()["run_id"]
        assert (await as_carol.get(f"/api/runs/{run_id}")).json()["team"] == "ml"
        assert (await as_dave.get(f"/api/runs/{run_id}")).status_code == 404
        assert (await as_carol.post(f"/api/runs/{run_id}/cancel")).status_code == 403  # read scope only


@pytest.mark.parametrize("bad", ["*", "{x}", "a}b", "a:b", "..", "has space", "x" * 300, "r\u00e9sum\u00e9", "%2A"])
async def test_run_id_injection_is_rejected_before_any_redis_command(gateway, redis_url, bad):
    from urllib.parse import quote

    from redis.asyncio import Redis

    monitor_client = Redis.from_url(redis_url)
    seen: list[str] = []
    async with monitor_client.monitor() as monitor:
        reader = asyncio.create_task(_collect(monitor, seen))
        ready = f"monitor-ready-{new_run_id()}"
        async with Redis.from_url(redis_url) as probe:  # MONITOR shows commands once this one shows
            await eventually(lambda: _shown(probe, ready, seen))
        path = quote(bad, safe="")
        async with gateway.client() as client:
            for method, url in (("GET", f"/api/runs/{path}"), ("GET", f"/api/runs/{path}/events")):
                assert (await client.request(method, url)).status_code in (404, 422), url
            assert (await client.post(f"/api/runs/{path}/cancel")).status_code in (404, 422)
            assert (await client.get(f"/api/runs/{path}/stream")).status_code in (404, 422)
            code = await _ws_close(f"{gateway.ws}/ws/runs/{path}", additional_headers=gateway.headers)
            assert code in (4404, 4422)
            control = new_run_id()  # a valid id does reach Redis: proves the monitor sees commands
            assert (await client.get(f"/api/runs/{control}")).status_code == 404
        # MONITOR keeps the server's order: once the control's command shows, the earlier ones have.
        await wait_until(lambda: any(control in c for c in seen), timeout_s=30)
        reader.cancel()
    await monitor_client.aclose()
    needle = bad if bad != "%2A" else "*"
    assert any(control in c for c in seen), seen
    leaked = [c for c in seen if needle in c and "livestats:run:" in c]
    assert not leaked, leaked


async def _shown(probe, key: str, seen: list[str]) -> bool:
    await probe.exists(key)
    await asyncio.sleep(0.02)
    return any(key in c for c in seen)


async def _collect(monitor, seen: list[str]) -> None:
    while True:
        seen.append((await monitor.next_command())["command"])


async def test_websockets_from_a_foreign_origin_are_refused_and_allowed_origins_accepted(start_gateway):
    gateway = start_gateway(allowed_origins=["https://ui.example.com"])
    token = {"Authorization": f"Bearer {gateway.token}"}
    url = f"{gateway.ws}/ws/runs"
    assert await _ws_close(url, origin="https://evil.example.net", additional_headers=token) == 4403
    assert (await _ws_first(url, origin="https://ui.example.com", additional_headers=token))["type"] == "index"
    own = f"http://127.0.0.1:{gateway.config.port}"
    assert (await _ws_first(url, origin=own, additional_headers=token))["type"] == "index"


async def test_browser_login_sets_a_cookie_that_authenticates_and_is_refused_cross_site(gateway, make_token):
    token = await make_token("alice", "submit")
    own = f"http://127.0.0.1:{gateway.config.port}"
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as browser:
        assert (await browser.post("/api/session", json={"token": "nope"})).status_code == 401
        login = await browser.post("/api/session", json={"token": token}, headers={"Origin": own})
        assert login.status_code == 200 and login.json()["principal"] == "alice"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert (await browser.get("/api/session")).json()["principal"] == "alice"
        # A page on another site cannot spend the cookie on an unsafe request.
        cross = await browser.post("/api/runs", json=SPEC, headers={"Origin": "https://evil.example.net"})
        assert cross.status_code == 403
        assert (await browser.post("/api/runs", json=SPEC, headers={"Origin": own})).status_code == 202
        cookie_header = {"Cookie": f"livestats_session={browser.cookies['livestats_session']}"}
        first = await _ws_first(f"{gateway.ws}/ws/runs", origin=own, additional_headers=cookie_header)
        assert first["type"] == "index"
        assert (await browser.delete("/api/session")).status_code == 204
        assert (await browser.get("/api/session")).status_code == 401
        page = await browser.get("/login")
        script = await browser.get("/static/js/login.js")
        session = await browser.get("/static/js/session.js")  # the one place the pages post a token
    assert page.status_code == 200 and "/static/js/login.js" in page.text
    assert "location.hash" in script.text and 'from "./session.js"' in script.text
    assert session.status_code == 200 and '"/api/session"' in session.text


async def test_a_token_in_a_websocket_subprotocol_authenticates_and_is_not_echoed(gateway, make_token):
    token = await make_token("alice", "read")
    async with connect(
        f"{gateway.ws}/ws/runs", subprotocols=[Subprotocol("livestats.v1"), Subprotocol(f"livestats.bearer.{token}")]
    ) as ws:
        assert ws.subprotocol == "livestats.v1"
        assert orjson.loads(await ws.recv())["type"] == "index"


async def test_revoking_a_token_closes_its_open_sockets_and_ends_its_sse_streams(start_gateway, make_token, redis):
    gateway = start_gateway(auth_recheck_s=0.2)
    token = await make_token("alice", "submit")
    auth = {"Authorization": f"Bearer {token}"}
    async with gateway.client(token) as as_alice:
        run_id = (await as_alice.post("/api/runs", json=SPEC)).json()["run_id"]
        async with (
            connect(f"{gateway.ws}/ws/runs", additional_headers=auth) as index,
            connect(f"{gateway.ws}/ws/runs/{run_id}", additional_headers=auth) as run,
            as_alice.stream("GET", f"/api/runs/{run_id}/stream") as sse,
        ):
            assert orjson.loads(await index.recv())["type"] == "index"
            assert orjson.loads(await run.recv())["type"] == "hello"
            lines = sse.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            await TokenStore(redis).revoke(_id_of(token))
            for ws in (index, run):
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
                assert ws.close_code == 4401 and ws.close_reason == "token revoked"
            async with asyncio.timeout(10):
                rest = [line async for line in lines]  # the stream ends after its error event
    assert rest[-3:-1] == ["event: error", 'data: {"type":"error","code":4401,"message":"token revoked"}']


async def test_streams_per_principal_are_limited_with_4429_and_429(start_gateway, make_token):
    gateway = start_gateway(max_streams_per_principal=2)
    token = await make_token("alice", "submit")
    async with gateway.client(token) as client:
        run_id = (await client.post("/api/runs", json=SPEC)).json()["run_id"]
    other = await make_token("bob", "read")
    auth = {"Authorization": f"Bearer {token}"}
    held = [await connect(f"{gateway.ws}/ws/runs", additional_headers=auth) for _ in range(2)]
    try:
        for ws in held:
            assert orjson.loads(await ws.recv())["type"] == "index"
        assert await _ws_close(f"{gateway.ws}/ws/runs", additional_headers=auth) == 4429
        async with gateway.client(token) as client:
            refused = await client.get(f"/api/runs/{run_id}/stream")
            assert refused.status_code == 429 and "open streams" in refused.text
        # Another principal is not affected.
        bob = await _ws_first(f"{gateway.ws}/ws/runs", additional_headers={"Authorization": f"Bearer {other}"})
        assert bob["type"] == "index"
    finally:
        for ws in held:
            await ws.close()

    async def released() -> bool:  # the gateway lets go of the closed streams' slots
        async with connect(f"{gateway.ws}/ws/runs", open_timeout=10, additional_headers=auth) as ws:
            try:
                return orjson.loads(await ws.recv())["type"] == "index"
            except ConnectionClosed:
                return False

    await eventually(released)
    assert (await _ws_first(f"{gateway.ws}/ws/runs", additional_headers=auth))["type"] == "index"
