"""The dashboard in headless Chromium against a real gateway, Redis and worker (issue 5).

Each test checks the page against the DOM contract and, at the end, against the REST API: the
page must show what GET /api/runs/{id} says, no more (nothing doubled) and no less (nothing lost).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from helpers import wait_until
from playwright.async_api import Locator, Page, expect
from proc_util import pids_with_env
from run_stack import FAST_CALLS

pytestmark = pytest.mark.slow  # headless chromium against a full stack
COUNTERS = (
    "attempts_started",
    "successful_calls",
    "failed_attempts",
    "retries",
    "in_flight",
    "calls_done",
    "planned_calls",
)
GROWING = tuple(c for c in COUNTERS if c != "in_flight")  # counters that never go down during a run
ENDED = ("succeeded", "failed", "timed_out", "cancelled", "stalled")
SLOW = 45_000  # ms: a whole run on a busy 2-core machine
QUICK = 15_000  # ms: one page update, a reconnect, a navigation

# Every [data-counter] as an int (None while it does not show one), read in one go.
READ_COUNTERS = """() => Object.fromEntries([...document.querySelectorAll('[data-counter]')].map(
    e => [e.dataset.counter, /^\\d+$/.test(e.textContent.trim()) ? Number(e.textContent.trim()) : null]))"""

# Installed before the page's own scripts: remembers every value successful_calls shows, with the
# run status shown at that moment, so "it rose live" is an observation, not a timing guess.
RECORD_SUCCESSES = """(() => {
  window.__successes = [];
  const record = () => {
    const counter = document.querySelector('[data-counter="successful_calls"]');
    const text = counter ? counter.textContent.trim() : "";
    if (!/^\\d+$/.test(text)) return;
    const status = document.querySelector('[data-testid="run-status"]')?.textContent.trim() ?? "";
    const last = window.__successes.at(-1);
    if (!last || last.value !== Number(text) || last.status !== status)
      window.__successes.push({value: Number(text), status});
  };
  new MutationObserver(record).observe(document, {subtree: true, childList: true, characterData: true});
})();"""


def run_spec(name: str, *phases: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"name": name, "phases": list(phases), **options}


def counter(page: Page, field: str) -> Locator:
    return page.locator(f'[data-counter="{field}"]')


async def read_counters(page: Page) -> dict[str, int | None]:
    values: dict[str, int | None] = await page.evaluate(READ_COUNTERS)
    return values


async def wait_counter_at_least(page: Page, field: str, minimum: int) -> None:
    await page.wait_for_function(
        '([field, minimum]) => Number(document.querySelector(`[data-counter="${field}"]`)?.textContent) >= minimum',
        arg=[field, minimum],
        timeout=SLOW,
    )


async def expect_counters_equal(page: Page, snap: dict[str, Any]) -> None:
    for field in COUNTERS:
        await expect(counter(page, field), f"counter {field}").to_have_text(str(snap[field]), timeout=QUICK)


async def test_counters_rise_live_and_end_equal_to_the_api(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    await page.add_init_script(RECORD_SUCCESSES)
    latency = {"FPF_SIM_LATENCY_MS": "150", "FPF_SIM_JITTER_MS": "20"}
    run_id = await stack.submit(
        run_spec(
            "live-counters",
            {"name": "generate", "calls": 12, "concurrency": 2, "env": latency},
            {"name": "evaluate", "calls": 8, "concurrency": 2, "env": latency},
        ),
        token,
    )
    await page.goto(f"/runs/{run_id}")

    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    seen = await page.evaluate("window.__successes")
    live = [s["value"] for s in seen if s["status"] not in ENDED]
    assert len({v for v in live if v > 0}) >= 2, f"successful_calls did not rise live: {seen}"
    assert live == sorted(live), f"successful_calls went down while running: {seen}"

    snap = await stack.snapshot(run_id)
    assert (snap["status"], snap["successful_calls"], snap["planned_calls"]) == ("succeeded", 20, 20)
    await expect_counters_equal(page, snap)
    for phase in snap["phases"]:
        bar = page.locator(f'[data-testid="phase-progress"] [data-phase="{phase["name"]}"]')
        await expect(bar).to_have_attribute("data-done", str(phase["done"]))
        await expect(bar).to_have_attribute("data-planned", str(phase["planned"]))
    await expect(page.get_by_test_id("current-phase")).to_have_text(snap["current_phase"])
    await expect(page.get_by_test_id("freshness")).to_have_attribute("data-level", "ended")
    for chart in ("chart-calls", "chart-tokens", "chart-latency"):
        await expect(page.get_by_test_id(chart).locator("canvas").first).to_be_attached(timeout=QUICK)


async def test_a_reload_mid_run_shows_at_least_the_counts_before_and_never_doubles_them(
    stack, browser, login, make_token
):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    latency = {"FPF_SIM_LATENCY_MS": "150", "FPF_SIM_JITTER_MS": "20"}
    run_id = await stack.submit(
        run_spec("reload", {"name": "generate", "calls": 40, "concurrency": 2, "env": latency}), token
    )
    await page.goto(f"/runs/{run_id}")
    await wait_counter_at_least(page, "successful_calls", 3)
    before = await read_counters(page)
    assert (await stack.snapshot(run_id))["status"] == "running", "the run ended before the reload: make it longer"

    await page.reload()
    # Right after load: every growing counter is back, at least where it was.
    await page.wait_for_function(
        """(before) => {
            const shown = (f) => document.querySelector(`[data-counter="${f}"]`)?.textContent.trim() ?? "";
            return Object.entries(before).every(([f, v]) => /^\\d+$/.test(shown(f)) && Number(shown(f)) >= v);
        }""",
        arg={f: before[f] for f in GROWING},
        timeout=QUICK,
    )
    after_load = await read_counters(page)
    snap = await stack.snapshot(run_id)  # taken after the page was read: it can only be ahead
    for field in GROWING:
        shown_before, shown_after = before[field], after_load[field]
        assert shown_before is not None and shown_after is not None, (field, before, after_load)
        assert shown_before <= shown_after <= snap[field], (field, before, after_load, snap)
    # A running run with a worker beating every 0.5 s is fresh.
    await expect(page.get_by_test_id("freshness")).to_have_attribute("data-level", "green")
    await expect(page.get_by_test_id("freshness")).to_have_text(re.compile(r"updated \d+ s ago"))

    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    final = await stack.snapshot(run_id)
    await expect_counters_equal(page, final)


async def test_the_page_reconnects_after_a_gateway_restart_and_loses_or_doubles_no_event(
    stack, browser, login, make_token
):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    latency = {"FPF_SIM_LATENCY_MS": "200", "FPF_SIM_JITTER_MS": "20"}
    run_id = await stack.submit(
        run_spec("restart", {"name": "generate", "calls": 30, "concurrency": 2, "env": latency}), token
    )
    # While the gateway is down, each reconnection attempt makes Chromium log exactly this.
    socket = re.escape(f"{stack.gateway.ws}/ws/runs/{run_id}")
    browser.allow_console_error(rf"^WebSocket connection to '{socket}(\?since=[0-9-]+)?' failed: ")
    await page.goto(f"/runs/{run_id}")
    banner = page.get_by_test_id("conn-banner")
    await expect(page.get_by_test_id("conn-state")).to_have_text("live", timeout=QUICK)
    await expect(banner).to_be_hidden()
    await wait_counter_at_least(page, "successful_calls", 2)

    await asyncio.to_thread(stack.gateway.stop)
    await expect(banner).to_be_visible(timeout=QUICK)
    await expect(banner).to_contain_text(re.compile("reconnecting", re.IGNORECASE))
    await expect(page.get_by_test_id("conn-state")).to_have_text("reconnecting")
    await browser.screenshot(page, "reconnecting")
    await asyncio.to_thread(stack.gateway.start)  # the same port: the page's own retries find it
    await expect(banner).to_be_hidden(timeout=30_000)
    await expect(page.get_by_test_id("conn-state")).to_have_text("live", timeout=QUICK)

    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    snap = await stack.snapshot(run_id)
    await expect_counters_equal(page, snap)
    # Every event exactly once: the log counts distinct events, the run numbered them 1..seq.
    await expect(page.get_by_test_id("event-log")).to_have_attribute("data-count", str(snap["seq"]), timeout=QUICK)


async def test_cancelling_from_the_page_ends_the_run_and_its_fpf_processes(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    slow = {"FPF_SIM_LATENCY_MS": "500", "FPF_SIM_JITTER_MS": "50"}
    run_id = await stack.submit(
        run_spec("cancel-me", {"name": "generate", "calls": 200, "concurrency": 4, "env": slow}), token
    )
    await page.goto(f"/runs/{run_id}")
    await expect(page.get_by_test_id("run-status")).to_have_text("running", timeout=QUICK)
    await wait_until(lambda: pids_with_env("FPF_RUN_ID", run_id), 30)  # calls are really running

    cancel, dialog = page.get_by_test_id("cancel-button"), page.get_by_test_id("cancel-dialog")
    await expect(dialog).to_be_hidden()
    await cancel.click()  # first changing one's mind: nothing happens
    await expect(dialog).to_be_visible()
    await expect(dialog).to_have_js_property("tagName", "DIALOG")
    await page.get_by_test_id("cancel-abort").click()
    await expect(dialog).to_be_hidden()
    assert (await stack.snapshot(run_id))["status"] == "running"

    await cancel.click()
    await expect(dialog).to_be_visible()
    await browser.screenshot(page, "dialog")
    await page.get_by_test_id("cancel-confirm").click()
    await expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=30_000)
    snap = await stack.wait_status(run_id, "cancelled", timeout_s=10)
    assert snap["outcome"] == "cancelled"
    await wait_until(lambda: not pids_with_env("FPF_RUN_ID", run_id), 15)
    await expect(cancel).to_be_hidden()  # a finished run has nothing to cancel
    await expect_counters_equal(page, await stack.snapshot(run_id))


async def test_a_failed_attempt_shows_its_error_until_a_success_and_its_retry_in_the_log(
    stack, browser, login, make_token
):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    # Deterministic: every first attempt fails (FAIL_FIRST=1) and the second succeeds. One call
    # at a time, and a retry waits 1-2 s (backoff_base_s 2: half fixed, half jitter), so after
    # each failure nothing succeeds for at least a second: last_error is set for that long and
    # cleared by the success that follows; the last success clears it for good.
    flaky = {**FAST_CALLS, "FPF_SIM_FAIL_FIRST": "1"}
    run_id = await stack.submit(
        run_spec(
            "flaky",
            {"name": "flaky", "calls": 3, "concurrency": 1, "max_attempts": 3, "env": flaky},
            backoff_base_s=2.0,
            retry_budget_ratio=1.0,
        ),
        token,
    )
    await page.goto(f"/runs/{run_id}")
    last_error = page.get_by_test_id("last-error")
    await expect(last_error).to_have_attribute("data-state", "error", timeout=SLOW)
    await expect(last_error).to_contain_text("exit_code")
    await expect(last_error).to_contain_text(re.compile(r"flaky#\d"))
    await expect(last_error).to_contain_text("simulated failure")
    await browser.screenshot(page, "last-error")
    retry = page.locator('[data-testid="event-log"] [data-type="call.retrying"]').first
    await expect(retry).to_contain_text("attempt 2", timeout=QUICK)
    await expect(retry).to_contain_text("exit_code")

    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    # The box keeps its room (no layout shift) and says there is no error.
    await expect(last_error).to_have_attribute("data-state", "none", timeout=QUICK)
    await expect(last_error).to_contain_text("None since the last success")
    snap = await stack.snapshot(run_id)
    assert (snap["retries"], snap["failed_attempts"], snap["successful_calls"]) == (3, 3, 3)
    assert snap["last_error"] is None
    await expect(counter(page, "retries")).to_have_text(str(snap["retries"]))
    await expect_counters_equal(page, snap)


async def test_each_user_sees_only_their_own_runs_and_not_found_for_the_other(stack, browser, login, make_token):
    tokens = {"alice": await make_token("alice", "submit"), "bob": await make_token("bob", "submit")}
    quick = {"name": "generate", "calls": 1, "env": FAST_CALLS}
    runs = {user: await stack.submit(run_spec(f"{user}-run", quick), token) for user, token in tokens.items()}
    pages = {user: await login(await browser.new_context(), token) for user, token in tokens.items()}

    filter_values = (
        await pages["alice"]
        .get_by_test_id("status-filter")
        .locator("option")
        .evaluate_all("options => options.map(o => o.value)")
    )
    assert filter_values == ["", "queued", "running", "succeeded", "failed", "cancelled", "timed_out", "stalled"]
    await expect(pages["alice"].get_by_test_id("runs-table")).to_be_visible()

    for user, other in (("alice", "bob"), ("bob", "alice")):
        page, mine, theirs = pages[user], runs[user], runs[other]
        row = page.locator(f'tr[data-run-id="{mine}"]')
        await expect(row).to_be_visible(timeout=QUICK)
        await expect(row.locator('td[data-field="owner"]')).to_have_text(user)
        await expect(row.locator('td[data-field="name"] a')).to_have_attribute("href", f"/runs/{mine}")
        await expect(page.locator(f'tr[data-run-id="{theirs}"]')).to_have_count(0)
        await browser.screenshot(page, f"{user}-runs")

        # The gateway answers 404 for the other's run, as for one that does not exist. A page that
        # asks the REST API for it makes the browser log that 404 (the socket's 4404 logs nothing).
        browser.allow_console_error(r"status of 404 \(Not Found\)$", rf"/api/runs/{theirs}$")
        await page.goto(f"/runs/{theirs}")
        await expect(page.get_by_test_id("run-error")).to_contain_text(
            re.compile("not found", re.IGNORECASE), timeout=QUICK
        )
        await expect(page.get_by_test_id("run-error")).to_be_visible()


async def test_the_runs_page_asks_for_a_token_and_its_form_logs_in(stack, browser, make_token):
    # Logged out, the page learns it from GET /api/session's 401, which the browser logs.
    browser.allow_console_error(r"status of 401 \(Unauthorized\)$", r"/api/session$")
    token = await make_token("alice", "read")
    page = await (await browser.new_context()).new_page()
    await page.goto("/")
    await expect(page.get_by_test_id("conn-state")).to_have_text("closed", timeout=QUICK)
    await page.get_by_test_id("token-input").fill(token)
    await page.get_by_test_id("login-button").click()
    await expect(page.get_by_test_id("whoami")).to_have_text("alice", timeout=QUICK)
    await expect(page.get_by_test_id("conn-state")).to_have_text("live", timeout=QUICK)
    await expect(page.get_by_test_id("conn-banner")).to_be_hidden()
    await expect(page.get_by_test_id("runs-table")).to_be_visible()
