"""A gateway whose Redis is away at start starts all the same, not ready, and checks the key
layout once Redis answers: ready on a good database, kept not ready (saying why) on an old one."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from gateway_fixtures import GatewayHandle
from helpers import eventually
from layout_servers import fresh_server
from livestats_cli.embedded import free_port
from livestats_gateway.config import GatewayConfig
from livestats_shared import keys
from livestats_shared.redis_client import connect


async def _readiness(handle: GatewayHandle) -> tuple[int, str]:
    async with handle.client() as http:
        answer = await http.get("/readyz")
    return answer.status_code, answer.json().get("reason") or ""


@pytest.mark.parametrize("old_layout", [False, True])
async def test_a_gateway_started_without_redis_checks_the_layout_when_it_answers(tmp_path, queue_name, old_layout):
    with fresh_server(tmp_path / "valkey", appendonly=True) as server:
        if old_layout:
            redis = connect(server.url, "livestats.tests")
            await redis.hset("livestats:auth:tokens", "0123456789ab", "{}")  # type: ignore[misc]  # layout 1 only
            await redis.aclose()
        await asyncio.to_thread(server.stop)
        config = GatewayConfig(
            port=free_port(), redis_url=server.url, queue_name=queue_name, admin_token=secrets.token_urlsafe(32)
        )
        handle = await asyncio.to_thread(GatewayHandle(config).start)  # starts, though Redis is away
        try:
            code, reason = await _readiness(handle)
            assert code == 503 and "Redis unavailable" in reason, reason
            await asyncio.to_thread(server.start)
            if old_layout:

                async def refused() -> bool:
                    code, reason = await _readiness(handle)
                    return code == 503 and reason.startswith("key layout refused") and "livestats migrate" in reason

                await eventually(refused)
            else:

                async def ready() -> bool:
                    return (await _readiness(handle))[0] == 200

                await eventually(ready)
                redis = connect(server.url, "livestats.tests")
                assert await redis.hgetall(keys.LAYOUT) == {b"version": b"2", b"partitions": b"16"}  # type: ignore[misc]
                await redis.aclose()
        finally:
            await asyncio.to_thread(handle.stop)
