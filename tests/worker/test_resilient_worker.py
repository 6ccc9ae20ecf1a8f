"""The worker's poll loop outlives Redis outages, whatever shape the error takes."""

from __future__ import annotations

import pytest
from arq.worker import Worker
from livestats_worker.app import WorkerStopping, create_worker
from livestats_worker.config import WorkerConfig
from redis.exceptions import ConnectionError, ResponseError, WatchError

OUTAGES = [
    ConnectionError("Error 111 connecting"),
    # What redis-py raises when the connection drops while arq holds a WATCH (seen in the
    # restart test): without this the worker's poll loop ended.
    WatchError("A ConnectionError occurred on while watching one or more keys"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
async def test_an_outage_in_the_poll_loop_is_survived(monkeypatch, redis_url, error):
    async def failing_poll(self):
        raise error

    monkeypatch.setattr(Worker, "_poll_iteration", failing_poll)
    worker = create_worker(WorkerConfig(redis_url=redis_url), handle_signals=False)
    await worker._poll_iteration()  # waits a second and returns instead of raising


async def test_a_real_error_still_ends_the_poll_loop(monkeypatch, redis_url):
    async def failing_poll(self):
        raise ResponseError("WRONGTYPE")

    monkeypatch.setattr(Worker, "_poll_iteration", failing_poll)
    worker = create_worker(WorkerConfig(redis_url=redis_url), handle_signals=False)
    with pytest.raises(ResponseError):
        await worker._poll_iteration()


async def test_stop_polling_ends_the_loop_at_the_next_iteration(redis_url):
    worker = create_worker(WorkerConfig(redis_url=redis_url), handle_signals=False)
    worker.stop_polling()
    with pytest.raises(WorkerStopping):
        await worker._poll_iteration()
