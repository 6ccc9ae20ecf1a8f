"""`redis+sentinel://` URLs: parsed strictly, and clients that follow the primary the Sentinels name."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livestats_shared.compat import StableSentinel
from livestats_shared.redis_client import connect, redact_url
from livestats_shared.sentinel import InvalidSentinelUrl, SentinelUrl, parse
from redis.asyncio.sentinel import Sentinel

pytestmark = pytest.mark.sentinel


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis+sentinel://h1:26380/main", SentinelUrl((("h1", 26380),), "main")),
        (
            "redis+sentinel://u:p%40ss@h1,10.0.0.2:5000,[::1]:7/main/3",
            SentinelUrl((("h1", 26379), ("10.0.0.2", 5000), ("::1", 7)), "main", 3, "u", "p@ss"),
        ),
        ("redis+sentinel://:secret@h/svc", SentinelUrl((("h", 26379),), "svc", 0, None, "secret")),
    ],
)
def test_a_sentinel_url_names_the_sentinels_the_service_the_database_and_the_primarys_credentials(url, parsed):
    assert parse(url) == parsed


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "/<service>"),
        ("redis+sentinel://h:1/a/b/c", "/<service>"),
        ("redis+sentinel://h:1/svc/x", "not a number"),
        ("redis+sentinel://h:99999/svc", "not a Sentinel host:port"),
        ("redis+sentinel://h:1,/svc", "not a Sentinel host:port"),
        ("redis+sentinel://h:1/svc?ssl=true", "no query"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_saying_what_is_wrong(url, says):
    with pytest.raises(InvalidSentinelUrl, match=says.replace("?", r"\?")):
        parse(url)
    with pytest.raises(ValueError):  # callers that catch ValueError for bad settings catch it too
        connect(url, "livestats.tests")


def test_the_password_of_a_sentinel_url_is_redacted():
    assert redact_url("at redis+sentinel://u:hunter2@h:1,h:2/svc") == "at redis+sentinel://u:***@h:1,h:2/svc"


@pytest.mark.parametrize("kind", ["pool", "single", "busy_loop"])
async def test_every_kind_of_client_reaches_the_primary_named_and_closes_its_sentinel_links(session_sentinel_set, kind):
    sentinel_set = session_sentinel_set
    # pytest turns warnings into errors: an unclosed Sentinel connection (ResourceWarning) fails here.
    client: Any = connect(
        sentinel_set.url, f"livestats.tests.{kind}", single_connection=kind == "single", busy_loop=kind == "busy_loop"
    )
    try:
        await client.set("sentinel-test", kind)
        assert await client.client_getname() == f"livestats.tests.{kind}"
        role = await client.execute_command("ROLE")
        assert role[0] == b"master"
        assert int((await client.connection_pool.get_master_address())[1]) == sentinel_set.primary_port
    finally:
        await client.aclose()
    for sentinel in client.connection_pool.sentinel_manager.sentinels:
        assert not sentinel.connection_pool._in_use_connections
        assert all(c._writer is None for c in sentinel.connection_pool._available_connections)


class FakeSentinelNode:
    """Answers SENTINEL MASTERS after a loop turn: knowing the primary, or not (mid-failover)."""

    def __init__(self, knows: bool) -> None:
        self.knows = knows

    async def sentinel_masters(self) -> dict:
        await asyncio.sleep(0)
        state = {"ip": "10.0.0.1", "port": 6379, "is_master": True, "is_sdown": False, "is_odown": False}
        return {"svc": {**state, "num-other-sentinels": 2}} if self.knows else {}


@pytest.mark.parametrize(("cls", "keeps_all"), [(Sentinel, False), (StableSentinel, True)])
async def test_concurrent_discoveries_keep_every_sentinel_in_the_list(cls, keeps_all):
    # redis-py's Sentinel (the positive control) loses one when two discoveries overlap; ours does not.
    manager = cls([])
    nodes = [FakeSentinelNode(False), FakeSentinelNode(False), FakeSentinelNode(True)]
    manager.sentinels = list(nodes)
    found = await asyncio.gather(*(manager.discover_master("svc") for _ in range(2)))
    assert found == [("10.0.0.1", 6379)] * 2
    assert ({id(n) for n in manager.sentinels} == {id(n) for n in nodes}) is keeps_all
