"""Sentinel-managed primaries for tests (sentinel.py): one per test that kills it, one per session
for tests that only need to run against one.

`on_each_server` runs a test against the session's single server and against a Sentinel-managed
primary: it adds a `[sentinel]` variant of the suite's `backend` fixture (tests/conftest.py),
which `redis_url` follows, and so every fixture built on it (redis, publisher, gateways, workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sentinel import SentinelSet

on_each_server = pytest.mark.also_sentinel


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary, a replica and three Sentinels of this test's own: it may kill them."""
    servers = SentinelSet(tmp_path / "sentinel").start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def session_sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """Shared by the tests `on_each_server` runs against Sentinel; none of them kills a node."""
    servers = SentinelSet(tmp_path_factory.mktemp("sentinel")).start()
    try:
        yield servers
    finally:
        servers.stop()
