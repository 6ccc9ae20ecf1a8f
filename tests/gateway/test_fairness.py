"""Per-principal turns for expensive reads (fairness.PerPrincipal): pure asyncio, no server."""

from __future__ import annotations

import asyncio

from livestats_gateway.access.fairness import PerPrincipal


async def test_a_principal_beyond_its_limit_waits_while_another_principal_goes_ahead():
    gate = PerPrincipal(2)
    release, three_inside = asyncio.Event(), asyncio.Event()
    inside: list[str] = []

    async def read(principal: str) -> None:
        async with gate.hold(principal):
            inside.append(principal)
            if len(inside) == 3:
                three_inside.set()
            await release.wait()

    heavy = [asyncio.create_task(read("heavy")) for _ in range(3)]
    light = asyncio.create_task(read("light"))
    await asyncio.wait_for(three_inside.wait(), 10)
    for _ in range(10):  # let the waiting heavy read run, were it (wrongly) admitted
        await asyncio.sleep(0)
    assert sorted(inside) == ["heavy", "heavy", "light"]  # the third heavy read waits its turn
    assert gate.waited == 1
    release.set()
    await asyncio.gather(*heavy, light)
    assert inside.count("heavy") == 3
    assert gate._gates == {}  # idle principals hold no semaphore


async def test_a_cancelled_waiter_gives_its_place_back():
    gate = PerPrincipal(1)
    async with gate.hold("p"):
        waiter = asyncio.create_task(gate.hold("p").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    assert gate._gates == {}
