"""The compare page in Chromium: models per phase with their cost (unknown where unpriced) and
the estimator's calibration, over runs chosen by tag, equal to what the API answers."""

from __future__ import annotations

import random
import re
import secrets

import pytest
from analysis_runs import publish_run
from playwright.async_api import expect

pytestmark = pytest.mark.slow  # headless chromium against a full stack


async def test_the_compare_page_shows_models_costs_and_calibration_for_a_tag(
    stack, browser, login, make_token, publisher
):
    tag = "t" + secrets.token_hex(4)
    rng = random.Random(3)
    ids = []
    for i in range(10):
        out = rng.randint(200, 900)
        run_id = await publish_run(
            publisher,
            owner="alice",
            tag=tag,
            model="big" if i % 2 else "mystery",
            calls=2,
            out_tokens=out,
            predicted=round((100 + out) * 2 / 1.4),
            category="implementation",
            complexity="medium",
        )
        ids.append(run_id)
    token = await make_token("alice", "read")
    page = await login(await browser.new_context(), token)
    await page.goto(f"/compare?tag={tag}")
    await expect(page.get_by_test_id("compare-status")).to_have_text("10 runs compared.", timeout=15_000)
    api = (await stack.http.get("/api/compare", params={"tag": tag})).json()
    table = page.get_by_test_id("compare-table")
    rows = await table.locator("tbody tr").all_inner_texts()
    assert len(rows) == len(api["rows"]) == 2
    by_model = {r.split("\t")[0]: r.split("\t") for r in rows}
    assert by_model["mystery"][10].startswith("unknown")  # no price: unknown, never $0
    assert by_model["big"][10].startswith("$")
    assert by_model["big"][3] == str(next(r["calls"] for r in api["rows"] if r["model"] == "big"))
    verdict = page.get_by_test_id("calibration-verdict")
    await expect(verdict).to_contain_text("10 samples")
    await expect(page.get_by_test_id("calibration-table")).to_contain_text("category=implementation")
    await browser.screenshot(page, "compare")
    # The run page shows the run's cost: a priced run in dollars, an unpriced one as unknown.
    await page.goto(f"/runs/{ids[1]}")  # model big
    await expect(page.get_by_test_id("run-cost")).to_have_text(re.compile(r"^\$0\.0\d+$"), timeout=15_000)
    await page.goto(f"/runs/{ids[0]}")  # model mystery: no price
    await expect(page.get_by_test_id("run-cost")).to_have_text("unknown (2 unpriced)", timeout=15_000)
    # The filters are in the URL and the form: a second tag shows nothing.
    await page.goto(f"/compare?tag=none{tag}")
    await expect(page.get_by_test_id("compare-empty")).to_be_visible(timeout=15_000)
