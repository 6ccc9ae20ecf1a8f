"""An axe-core scan (tests/browser/vendor: npm axe-core, pinned and verified by VENDOR.json) of
every page of the dashboard, in Chromium on a phone and on a wide screen: no serious or critical
violation of WCAG 2.1 A/AA (contrast included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livestats_shared.events import Outcome
from page_util import DESKTOP, PHONE, QUICK, SLOW, VIEWPORTS, publish_ended_run
from playwright.async_api import Page, expect

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}


async def serious_violations(page: Page) -> list[str]:
    result: dict[str, Any] = await page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", RULES
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


@VIEWPORTS
async def test_every_page_has_no_serious_accessibility_violation(
    stack, browser, login, publisher, make_token, viewport
):
    assert viewport in (PHONE, DESKTOP)
    failed = await publish_ended_run(publisher, Outcome.FAILED, "retry_budget_exhausted", "12 retries of 12")
    token = await make_token("alice", "submit")
    live = await stack.submit(
        {
            "name": "a11y",
            "phases": [
                {
                    "name": "gen",
                    "calls": 2000,  # still running at the end however slow the scans are: it is cancelled
                    "concurrency": 2,
                    "env": {"FPF_SIM_LATENCY_MS": "300", "FPF_SIM_FAIL_FIRST": "1"},
                }
            ],
            "retry_budget_ratio": 1.0,
        },
        token,
    )
    context = await browser.new_context(viewport)
    await context.add_init_script(AXE)  # init scripts are not subject to the page's CSP
    problems: dict[str, list[str]] = {}

    login_page = await context.new_page()
    browser.allow_console_error(r"status of 401 \(Unauthorized\)$", r"/api/session$")
    await login_page.goto("/")
    await expect(login_page.get_by_test_id("token-input")).to_be_visible(timeout=QUICK)
    problems["login"] = await serious_violations(login_page)
    await login_page.close()

    page = await login(context, stack.gateway.token)
    await expect(page.locator(f'tr[data-run-id="{failed}"]')).to_be_visible(timeout=QUICK)
    problems["runs"] = await serious_violations(page)

    await page.goto(f"/runs/{failed}")
    await expect(page.get_by_test_id("run-status")).to_have_text("failed", timeout=QUICK)
    problems["ended run"] = await serious_violations(page)

    await page.goto(f"/runs/{live}")
    await expect(page.get_by_test_id("last-error")).to_have_attribute("data-state", "error", timeout=SLOW)
    problems["running run"] = await serious_violations(page)
    await page.locator('[data-testid="event-log"] [data-call]').first.click()
    await expect(page.get_by_test_id("call-dialog")).to_be_visible()
    problems["call dialog"] = await serious_violations(page)

    found = {name: v for name, v in problems.items() if v}
    assert not found, "\n".join(f"{name}: {line}" for name, lines in found.items() for line in lines)
    await page.get_by_test_id("call-dialog-close").click()
    await page.get_by_test_id("cancel-button").click()
    await page.get_by_test_id("cancel-confirm").click()
    await expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=SLOW)
