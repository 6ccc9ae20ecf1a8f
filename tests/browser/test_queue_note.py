"""The run page of a queued run says why it waits (GET /api/runs/{id} `queue`), in Chromium."""

from __future__ import annotations

from playwright.async_api import expect

HOLD = {"FPF_SIM_LATENCY_MS": "60000"}  # the runs ahead hold their slots for the whole test
QUICK = 15_000  # ms: one page update on a busy 2-core machine


async def test_a_queued_runs_page_says_why_it_waits_and_drops_the_note_once_it_ends(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    spec = {"name": "holder", "phases": [{"name": "generate", "calls": 1, "env": HOLD}]}
    for _ in range(8):  # the default quota: 8 concurrent runs per principal
        await stack.submit(spec, token)
    waiting = await stack.submit({**spec, "name": "ninth"}, token)
    view = (await stack.http.get(f"/api/runs/{waiting}")).json()
    assert view["status"] == "queued", view
    await page.goto(f"/runs/{waiting}")
    note = page.get_by_test_id("queue-note")
    await expect(note).to_have_text("waiting: your 8 concurrent runs are at the limit", timeout=QUICK)
    assert (await stack.http.post(f"/api/runs/{waiting}/cancel")).json()["status"] == "cancelled"
    await expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=QUICK)
    await expect(note).to_be_hidden(timeout=QUICK)
