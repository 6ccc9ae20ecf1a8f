"""Every non-finite number in a JSON body is a 422 whose body renders, on every route; routes
that take no body are not upset by one (never a 500)."""

from __future__ import annotations

import httpx
import orjson
import pytest
from livestats_shared.ids import new_run_id
from ws_client import publish_run

HEARTBEAT = {"elapsed_s": 1.5, "remaining_s": 60.0, "in_flight": 0, "pids": []}
SPEC = {"name": "finite", "phases": [{"name": "generate", "calls": 1}]}
# Valid bodies, one per JSON route: each must be accepted first (the positive control), then
# refused with a non-finite number put in each place a number or any value may go.
VALID = {
    ("POST", "/api/runs"): lambda token: {**SPEC, "timeout_s": 60},
    ("POST", "/api/runs/{run_id}/events"): lambda token: {"events": [{"type": "heartbeat", "data": HEARTBEAT}]},
    ("POST", "/api/session"): lambda token: {"token": token},
}
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")


def _poison(body: dict, literal: str) -> list[bytes]:
    """The body as JSON with `literal` in place of each of a few values, raw (no encoder
    would write them)."""
    marker = "__LIVESTATS_POISON__"
    variants = [{**body, next(iter(body)): marker}, {**body, "extra": [1, {"deep": marker}]}]
    if "events" in body:
        variants.append({"events": [{"type": "heartbeat", "data": {**HEARTBEAT, "elapsed_s": marker}}]})
    if "timeout_s" in body:
        variants.append({**body, "timeout_s": marker})
    return [orjson.dumps(v).replace(f'"{marker}"'.encode(), literal.encode()) for v in variants]


def _json_routes(openapi: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in openapi["paths"].items()
        for method, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    }


async def test_every_json_route_answers_non_finite_numbers_with_a_422_that_renders(gateway, make_token):
    token = await make_token("alice", "submit")
    async with gateway.client() as admin:
        openapi = (await admin.get("/openapi.json")).json()
        # An external run takes events through the API (heartbeats included).
        run_id = (await admin.post("/api/runs", json={**SPEC, "external": True})).json()["run_id"]
        # The gate takes events of a run only after its run.started (docs/contract.md).
        started = {"worker": "external", "timeout_s": 600, "deadline_ts": 0, "retry_budget": 0}
        answer = await admin.post(
            f"/api/runs/{run_id}/events", json={"events": [{"type": "run.started", "data": started}]}
        )
        assert answer.status_code < 300, answer.text
    assert _json_routes(openapi) == set(VALID), "a new JSON route: add it to VALID"
    own = {"Origin": f"http://127.0.0.1:{gateway.config.port}"}
    async with gateway.client() as admin:
        for (method, path), make_body in VALID.items():
            url = path.format(run_id=run_id)
            body = make_body(token)
            accepted = await admin.request(method, url, json=body, headers=own)
            assert accepted.status_code < 300, (path, accepted.text)  # the positive control
            for literal in NON_FINITE:
                for raw in _poison(body, literal):  # type: ignore[arg-type]
                    answer = await admin.request(
                        method, url, content=raw, headers={**own, "Content-Type": "application/json"}
                    )
                    assert answer.status_code == 422, (path, raw, answer.status_code, answer.text)
                    detail = answer.json()["detail"]  # it renders, as JSON
                    assert detail[0]["type"] == "json_invalid", detail
                    if not literal[-1].isdigit():
                        assert "finite" in detail[0]["ctx"]["error"]


async def test_routes_without_a_json_body_ignore_one_with_nan_and_never_answer_500(gateway, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 5)  # queued, started, one call, finished
    async with gateway.client() as admin:
        openapi = (await admin.get("/openapi.json")).json()
        json_routes = _json_routes(openapi)
        others = [
            (method.upper(), path)
            for path, item in openapi["paths"].items()
            for method in item
            if (method.upper(), path) not in json_routes and not path.endswith("/stream")
        ]
        assert len(others) >= 8
        for method, path in others:
            answer = await admin.request(
                method,
                path.format(run_id=run_id),
                content=b'{"x": NaN}',
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code < 500, (method, path, answer.text)


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
async def test_a_non_finite_number_is_refused_before_authentication_is_even_needed(gateway, literal):
    # Unauthenticated callers got a 500 with a traceback before (issue 15): now a plain refusal.
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as anonymous:
        answer = await anonymous.post(
            "/api/session", content=f'{{"token": {literal}}}', headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 422 and "finite" in answer.text
