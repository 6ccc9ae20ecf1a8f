"""cancel_run's decisions that need no worker: pure unit tests on fakeredis."""

from __future__ import annotations

from typing import cast

import fakeredis
import pytest
from livestats_shared import keys
from livestats_shared.control import UnknownRun, cancel_run
from livestats_shared.errors import InvalidRunId
from livestats_shared.publish import Publisher


class NoPublisher:
    """cancel_run must not publish in these cases; any attempt fails the test."""

    async def publish(self, *args, **kwargs):
        raise AssertionError("nothing should be published")


@pytest.fixture
async def fake():
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


async def test_cancelling_an_unknown_run_says_so(fake):
    with pytest.raises(UnknownRun, match="no run r-404"):
        await cancel_run(fake, cast(Publisher, NoPublisher()), "r-404")


async def test_cancelling_a_finished_run_changes_nothing(fake):
    await fake.hset(keys.run_stats("r-1"), "status", "succeeded")
    assert await cancel_run(fake, cast(Publisher, NoPublisher()), "r-1") == "succeeded"
    assert await fake.exists(keys.run_cancel("r-1")) == 0


async def test_an_invalid_run_id_is_refused_before_any_command(fake):
    with pytest.raises(InvalidRunId):
        await cancel_run(fake, cast(Publisher, NoPublisher()), "r:1 *")
    assert await fake.dbsize() == 0
