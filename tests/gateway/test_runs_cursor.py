"""`GET /api/runs` cursors reveal nothing the caller may not see: decoded, a cursor holds a
position (a creation time and a count), never a run id, however the caller's runs and others'
runs interleave, equal creation times included."""

from __future__ import annotations

import base64

from livestats_shared import keys

SPEC = {"name": "cursor", "phases": [{"name": "generate", "calls": 1}]}


def _decoded(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


async def test_cursors_hold_no_run_id_and_page_through_the_callers_runs_exactly_once(gateway, make_token, redis):
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    mine: list[str] = []
    theirs: list[str] = []
    async with gateway.client(alice) as as_alice, gateway.client(bob) as as_bob:
        for i in range(12):  # interleaved, so every page boundary of bob's falls next to alice's runs
            client, owned = (as_alice, theirs) if i % 3 else (as_bob, mine)
            owned.append((await client.post("/api/runs", json=SPEC)).json()["run_id"])
        # Some runs of both in one millisecond: page boundaries between entries of equal score.
        tie = await redis.zscore(keys.RUNS_INDEX, mine[1])
        await redis.zadd(keys.RUNS_INDEX, {theirs[2]: tie, theirs[3]: tie, mine[2]: tie}, xx=True)
        for limit in (1, 2):
            for client, own, foreign in ((as_bob, mine, theirs), (as_alice, theirs, mine)):
                seen, cursors = await _page_all(client, limit, own)
                assert sorted(seen) == sorted(own) and len(seen) == len(set(seen))
                assert cursors, "no cursor was handed out: the check below would be vacuous"
                for cursor in cursors:
                    raw = _decoded(cursor)
                    assert not any(run_id.encode() in raw for run_id in foreign + own), raw
                    score, skip = raw.decode().split(" ")
                    assert float(score) > 0 and int(skip) >= 1


async def _page_all(client, limit: int, wanted: list[str]) -> tuple[list[str], list[str]]:
    seen: list[str] = []
    cursors: list[str] = []
    cursor = None
    for _ in range(200):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/runs", params=params)).json()
        seen += [r["run_id"] for r in page["runs"] if r["run_id"] in wanted]
        if page["next"] is None or set(wanted) <= set(seen):
            break
        cursor = page["next"]
        cursors.append(cursor)
    return seen, cursors


async def test_a_cursor_with_a_bad_count_is_refused_with_422(gateway):
    async with gateway.client() as admin:
        for raw in (b"1700000000000.0 0", b"1700000000000.0 -1", b"nan 1", b"1.0 x", b"1.0"):
            cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            answer = await admin.get("/api/runs", params={"cursor": cursor})
            assert answer.status_code == 422, (raw, answer.text)


async def test_a_page_that_ends_on_someone_elses_runs_hands_out_no_id_of_theirs(
    gateway, make_token, redis, monkeypatch
):
    """The case of issue 15: a caller who sees none of the newest runs gets a short page whose
    cursor points past them (the scan budget, 5,000 entries, made small here)."""
    from livestats_gateway.routes import paging

    monkeypatch.setattr(paging, "SCAN_BUDGET", 4)
    monkeypatch.setattr(paging, "FILTER_BATCH", 2)
    alice, bob = await make_token("alice", "submit"), await make_token("bob", "submit")
    async with gateway.client(alice) as as_alice, gateway.client(bob) as as_bob:
        old = (await as_bob.post("/api/runs", json=SPEC)).json()["run_id"]
        newer = [(await as_alice.post("/api/runs", json=SPEC)).json()["run_id"] for _ in range(6)]
        # Bob's list reads his own index (docs/scheduling.md), so alice's newer runs cost him no
        # scan; whatever page it is, no run of hers shows and no cursor names any run.
        first = (await as_bob.get("/api/runs", params={"limit": 5})).json()
        assert not {r["run_id"] for r in first["runs"]} & set(newer)
        if first["next"] is not None:
            assert not any(run_id.encode() in _decoded(first["next"]) for run_id in [*newer, old])
        seen, cursors = await _page_all(as_bob, 5, [old])
    assert seen == [old]
    assert not any(run_id.encode() in _decoded(c) for c in cursors for run_id in [*newer, old])
