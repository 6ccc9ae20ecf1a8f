"""`connect(busy_loop=True)`: the pool that skips redis-py's per-checkout socket poll still never
hands a command someone else's reply, however commands are cancelled."""

from __future__ import annotations

import asyncio
import random

from livestats_shared.redis_client import connect


async def test_a_busy_loop_client_gives_every_command_its_own_reply_across_cancellations(redis_url):
    client = connect(redis_url, "livestats.test.busy", busy_loop=True)
    try:
        keys = {f"busy-loop-test:{i}": f"value-{i}" for i in range(20)}
        await client.mset(keys)
        rng = random.Random(8)
        for _ in range(300):
            doomed = [asyncio.ensure_future(client.get(k)) for k in rng.sample(list(keys), 5)]
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)  # cancel before the send, mid-reply or after: all of them
            for task in doomed:
                task.cancel()
            key = rng.choice(list(keys))
            assert (await client.get(key)).decode() == keys[key]
            await asyncio.gather(*doomed, return_exceptions=True)
        results = await asyncio.gather(*(client.get(k) for k in keys))
        assert [r.decode() for r in results] == list(keys.values())
    finally:
        await client.delete(*keys)
        await client.aclose()
