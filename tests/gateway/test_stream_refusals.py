"""One map from how a stream fails to its WebSocket close code and HTTP status (opening.py), and
both transports answer by it."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import HTTPException
from livestats_gateway.access.auth import AuthError
from livestats_gateway.access.limits import TooManyConnections
from livestats_gateway.fanout.subscriber import SubscriberClosed
from livestats_gateway.fanout.wire import CloseCode, InvalidStreamId
from livestats_gateway.routes.failures import RETRY_AFTER_S
from livestats_gateway.routes.opening import refusal_for
from livestats_gateway.routes.routing import known_errors
from livestats_shared.control import UnknownRun
from livestats_shared.errors import InvalidRunId, RunStateConflict
from livestats_shared.ids import new_run_id
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from ws_client import publish_run

CASES = [
    (UnknownRun("r1"), CloseCode.NOT_FOUND, 404),
    (InvalidRunId("bad id"), CloseCode.INVALID_RUN_ID, 422),
    (InvalidStreamId("not a stream id"), CloseCode.BAD_REQUEST, 422),
    (AuthError(401, "no token"), CloseCode.UNAUTHORIZED, 401),
    (AuthError(403, "foreign origin"), CloseCode.FORBIDDEN, 403),
    (TooManyConnections("alice", 3), CloseCode.TOO_MANY_STREAMS, 429),
    (RedisConnectionError("refused"), CloseCode.TRY_AGAIN_LATER, 503),
    (SubscriberClosed(CloseCode.SLOW_CLIENT, "behind"), CloseCode.SLOW_CLIENT, 408),
]


@pytest.mark.parametrize(("exc", "code", "status"), CASES, ids=lambda v: type(v).__name__)
def test_each_known_failure_has_one_close_code_and_one_status(exc, code, status):
    refusal = refusal_for(exc, "ws")
    assert (refusal.code, refusal.status) == (code, status)
    assert refusal.reason


def test_an_unexpected_failure_is_an_internal_error_and_is_logged_with_its_traceback(caplog):
    with caplog.at_level(logging.ERROR, "livestats.gateway.streams"):
        refusal = refusal_for(KeyError("surprise"), "sse")
    assert (refusal.code, refusal.status, refusal.reason) == (CloseCode.INTERNAL_ERROR, 500, "internal error")
    assert caplog.records[0].exc_info is not None


def test_every_close_code_of_the_gateway_has_a_status():
    for code in CloseCode:
        assert refusal_for(SubscriberClosed(code, "x"), "ws").code == code


async def _ws_close_code(url: str, headers: dict[str, str]) -> int | None:
    async with connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code


async def test_websocket_and_sse_refuse_the_same_requests_with_the_mapped_code_and_status(gateway, publisher):
    run_id = new_run_id()
    await publish_run(publisher, run_id, 4)
    requests = [  # (path, query, headers, the failure the map answers for)
        (f"/runs/{new_run_id()}", "", gateway.headers, UnknownRun("x")),
        ("/runs/UPPER", "", gateway.headers, InvalidRunId("x")),
        (f"/runs/{run_id}", "?since=yesterday", gateway.headers, InvalidStreamId("x")),
        (f"/runs/{run_id}", "", {}, AuthError(401, "x")),
    ]
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as client:
        for path, query, headers, failure in requests:
            expected = refusal_for(failure, "test")
            assert await _ws_close_code(f"{gateway.ws}/ws{path}{query}", headers) == expected.code, path
            answer = await client.get(f"/api{path}/stream{query}", headers=headers)
            assert answer.status_code == expected.status, (path, answer.text)


@pytest.mark.parametrize(("exc", "code", "status"), CASES, ids=lambda v: type(v).__name__)
async def test_rest_routes_answer_the_status_the_streams_map_to(exc, code, status):
    """One map (failures.py): a REST route that meets the failure answers the stream's status."""
    errors = known_errors()
    await anext(errors)
    with pytest.raises(HTTPException) as raised:
        await errors.athrow(exc)
    assert raised.value.status_code == status
    if status == 503:
        assert raised.value.headers == {"Retry-After": str(RETRY_AFTER_S)}


async def test_rest_routes_let_an_unknown_failure_through_and_answer_409_for_a_state_conflict():
    errors = known_errors()
    await anext(errors)
    with pytest.raises(KeyError):
        await errors.athrow(KeyError("surprise"))  # FastAPI's handler logs it and answers 500
    errors = known_errors()
    await anext(errors)
    with pytest.raises(HTTPException) as raised:
        await errors.athrow(RunStateConflict("r1", "running"))
    assert raised.value.status_code == 409
