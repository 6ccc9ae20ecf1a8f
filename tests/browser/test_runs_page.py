"""The runs page (issue 16): start time, duration and outcome reason per run, every run reachable
(the live index holds the newest; older ones come page by page from GET /api/runs), search by
name and owner, a status filter, and runs whose data expired leave the list without a reload."""

from __future__ import annotations

import re
import time

import pytest
from helpers import eventually
from livestats_shared import keys
from livestats_shared.events import Outcome, PhasePlan, RunFinished, RunQueued, RunStarted
from livestats_shared.ids import new_run_id
from page_util import DESKTOP, PHONE, QUICK, assert_no_horizontal_overflow
from playwright.async_api import expect

INDEX_LIMIT = 3  # the live index sends only this many runs: the rest must come by paging


async def publish_runs(publisher, names_and_owners: list[tuple[str, str | None, Outcome]]) -> list[str]:
    ids: list[str] = []
    for name, owner, outcome in names_and_owners:
        run_id = new_run_id()
        await publisher.publish(
            run_id,
            RunQueued(name=name, planned_calls=1, phases=[PhasePlan(name="p", calls=1)], timeout_s=10, owner=owner),
        )
        deadline = int(time.time() * 1000) + 10_000
        await publisher.publish(run_id, RunStarted(worker="w", timeout_s=10, deadline_ts=deadline, retry_budget=0))
        await publisher.publish(run_id, RunFinished(outcome=outcome, reason=f"reason-of-{name}", elapsed_s=3.5))
        ids.append(run_id)
    return ids


@pytest.mark.parametrize("gateway_overrides", [{"index_limit": INDEX_LIMIT}])
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1440x900"])
async def test_runs_page_pages_past_the_live_index_searches_and_filters(stack, browser, login, publisher, viewport):
    tag = new_run_id()[-6:]  # the server is shared with other tests: these runs are told by their tag
    runs: list[tuple[str, str | None, Outcome]] = [
        (f"nightly-{tag}-{i}", f"alice{tag}" if i % 2 else f"bob{tag}", Outcome.SUCCEEDED) for i in range(7)
    ]
    runs.append((f"broken-build-{tag}", f"carol{tag}", Outcome.FAILED))
    ids = await publish_runs(publisher, runs)
    page = await login(await browser.new_context(viewport), stack.gateway.token)
    rows = page.locator("tbody tr")
    # Scrolling to the end loads the older runs: all 8, though the live index sent 3.
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    for run_id in ids:
        await expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_have_count(1, timeout=QUICK)
    # The server also holds the runs of the tests that ran before (pages of them, in any order):
    # each scroll to the end loads the next page, until there is none.
    more = page.get_by_test_id("runs-more")

    async def all_loaded() -> bool:
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        return not await more.is_visible()

    await eventually(all_loaded, timeout_s=75, interval_s=0.2)
    await expect(page.get_by_test_id("runs-count")).to_contain_text("all runs loaded")
    failed_row = page.locator(f'tr[data-run-id="{ids[-1]}"]')
    await expect(failed_row.locator('[data-field="reason"]')).to_have_text(f"reason-of-broken-build-{tag}")
    await expect(failed_row.locator('td[data-field="started"]')).to_have_text(
        re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
    )
    await expect(failed_row.locator('td[data-field="duration"]')).to_have_text("3s")
    await assert_no_horizontal_overflow(page)

    search = page.get_by_test_id("runs-search")
    await search.fill(f"alice{tag}")  # by owner
    await expect(rows).to_have_count(3)
    await expect(page).to_have_url(re.compile(rf"[?&]q=alice{tag}"))
    await search.fill(f"nightly-{tag}-4")  # by name
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator('td[data-field="owner"]')).to_have_text(f"bob{tag}")
    await search.fill(tag)
    await page.get_by_test_id("status-filter").select_option("failed")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-run-id", ids[-1])
    await search.fill(f"nightly-{tag}")
    await expect(page.get_by_test_id("runs-empty")).to_be_visible()
    await expect(rows).to_have_count(0)


async def test_a_run_whose_data_expired_leaves_the_list_without_a_reload(stack, browser, login, publisher, redis):
    ids = await publish_runs(publisher, [("keep", None, Outcome.SUCCEEDED), ("expire", None, Outcome.SUCCEEDED)])
    context = await browser.new_context()
    page = await login(context, stack.gateway.token)
    await page.clock.install()
    await page.reload()
    for run_id in ids:
        await expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible(timeout=QUICK)
    # What the retention TTL does to a finished run: its stats hash and stream disappear.
    await redis.delete(keys.run_stats(ids[1]), keys.run_events(ids[1]))
    await page.clock.fast_forward(61_000)  # the page's expiry check runs once a minute
    await expect(page.locator(f'tr[data-run-id="{ids[1]}"]')).to_have_count(0, timeout=QUICK)
    await expect(page.locator(f'tr[data-run-id="{ids[0]}"]')).to_be_visible()
