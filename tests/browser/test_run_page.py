"""The run page answers "is it healthy, how far, why did it fail, when will it end" (issue 16):
the outcome's reason, final phase states, per-phase estimation, a call's attempts, a layout that
does not jump while a run streams, and no horizontal overflow on a phone or a wide screen."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from livestats_cli.up import demo_spec
from page_util import DESKTOP, ENDINGS, PHONE, QUICK, SLOW, VIEWPORTS, assert_no_horizontal_overflow, publish_ended_run
from playwright.async_api import expect
from run_stack import FAST_CALLS

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@VIEWPORTS
async def test_the_outcome_reason_shows_for_every_ending_that_is_not_a_success(
    stack, browser, login, publisher, viewport
):
    run_ids = {
        outcome: await publish_ended_run(publisher, outcome, reason, detail) for outcome, reason, detail in ENDINGS
    }
    page = await login(await browser.new_context(viewport), stack.gateway.token)
    for outcome, reason, detail in ENDINGS:
        row = page.locator(f'tr[data-run-id="{run_ids[outcome]}"]')
        await expect(row.locator('[data-field="reason"]')).to_have_text(f"{reason}: {detail}", timeout=QUICK)
        await expect(row.locator('td[data-field="owner"]')).to_have_text("operator")
    await assert_no_horizontal_overflow(page)
    await browser.screenshot(page, f"runs-{viewport['width']}")

    for outcome, reason, detail in ENDINGS:
        await page.goto(f"/runs/{run_ids[outcome]}")
        await expect(page.get_by_test_id("run-status")).to_have_text(outcome.value, timeout=QUICK)
        shown = page.get_by_test_id("run-reason")
        await expect(shown).to_have_text(f"{reason}: {detail}")
        await expect(shown).to_be_in_viewport()
        # The phase the run ended in is closed with the run's outcome, not left "running".
        phase = page.locator('[data-testid="phase-progress"] .phase')
        await expect(phase).to_have_attribute("data-state", outcome.value)
        await expect(phase.locator('[data-field="state"]')).to_have_text(outcome.value)
        await expect(page.get_by_test_id("run-owner")).to_contain_text("by operator")
        await expect(page.get_by_test_id("cancel-button")).to_be_hidden()
        await expect(page.get_by_test_id("eta")).to_have_text("—")
        await assert_no_horizontal_overflow(page)
        await browser.screenshot(page, f"{outcome.value}-{viewport['width']}")


# Installed before the page's scripts: every animation frame, the bounding box of each panel.
RECORD_BOXES = """(() => {
  window.__boxes = [];
  const panels = () => [
    ['reason', document.querySelector('[data-testid="run-reason"]')],
    ['counters', document.querySelector('.counters')],
    ['last-error', document.querySelector('[data-testid="last-error"]')],
    ...[...document.querySelectorAll('main .panel')].map((p, i) => [`panel-${i}`, p]),
  ];
  const sample = () => {
    const status = document.querySelector('[data-testid="run-status"]')?.textContent ?? '';
    const err = document.querySelector('[data-testid="last-error"]')?.dataset.state ?? '';
    if (status === 'running') {
      const boxes = {};
      for (const [name, node] of panels()) {
        if (!node) continue;
        const r = node.getBoundingClientRect();
        boxes[name] = [Math.round(r.x), Math.round(r.y + window.scrollY), Math.round(r.width), Math.round(r.height)];
      }
      window.__boxes.push({err, boxes});
    }
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
})();"""


@VIEWPORTS
async def test_the_panels_do_not_move_while_a_run_with_failures_streams(stack, browser, login, make_token, viewport):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(viewport), token)
    await page.add_init_script(RECORD_BOXES)
    # Every first attempt fails and is retried: the last error comes and goes all run long.
    flaky = {"FPF_SIM_LATENCY_MS": "200", "FPF_SIM_JITTER_MS": "20", "FPF_SIM_FAIL_FIRST": "1"}
    run_id = await stack.submit(
        {
            "name": "jumpy",
            "phases": [{"name": "flaky", "calls": 10, "concurrency": 2, "max_attempts": 3, "env": flaky}],
            "backoff_base_s": 0.6,
            "retry_budget_ratio": 1.0,
        },
        token,
    )
    await page.goto(f"/runs/{run_id}")
    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    samples: list[dict[str, Any]] = await page.evaluate("window.__boxes")
    states = {s["err"] for s in samples}
    assert {"error", "none"} <= states, f"the run never showed both an error and none: {states}"
    # Skip the frames before the first full render (the snapshot arrives with the hello).
    settled = [s for s in samples if "last-error" in s["boxes"] and len(s["boxes"]) >= 9]
    assert len(settled) > 10, f"too few frames sampled while running: {len(settled)}"
    for name in settled[0]["boxes"]:
        seen = {tuple(s["boxes"][name]) for s in settled if name in s["boxes"]}
        assert len(seen) == 1, f"{name} moved or resized while the run streamed: {sorted(seen)[:6]}"
    await assert_no_horizontal_overflow(page)


async def test_a_call_opens_its_attempts_with_reason_excerpt_duration_and_tokens(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    flaky = {**FAST_CALLS, "FPF_SIM_FAIL_FIRST": "1"}
    run_id = await stack.submit(
        {
            "name": "drill",
            "phases": [{"name": "flaky", "calls": 2, "concurrency": 1, "max_attempts": 3, "env": flaky}],
            "backoff_base_s": 0.2,
            "retry_budget_ratio": 1.0,
        },
        token,
    )
    await page.goto(f"/runs/{run_id}")
    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    failed_row = page.locator('[data-testid="event-log"] [data-type="call.failed"][data-call]').first
    key = await failed_row.get_attribute("data-call")
    assert key and re.fullmatch(r"flaky#\d+", key), key
    # Keyboard: the row is focusable and Enter opens it.
    await failed_row.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_test_id("call-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_have_attribute("data-call", key)
    await expect(dialog.locator("h2")).to_have_text(f"Call {key}: 2 attempts")
    first, second = dialog.locator('[data-attempt="1"]'), dialog.locator('[data-attempt="2"]')
    await expect(first).to_have_attribute("data-state", "failed")
    await expect(first.locator('[data-field="reason"]')).to_have_text("exit_code")
    await expect(first.locator('[data-field="excerpt"]')).to_contain_text("simulated failure")
    await expect(first.locator('[data-field="duration"]')).to_have_text(re.compile(r"^\d+\.\d\d s$"))
    await expect(first.locator('[data-field="retried after"]')).to_have_text(re.compile(r"^\d+\.\d s$"))
    await expect(second).to_have_attribute("data-state", "succeeded")
    await expect(second.locator('[data-field="tokens"]')).to_have_text(re.compile(r"^\d+$"))
    await browser.screenshot(page, "call-dialog")
    await page.get_by_test_id("call-dialog-close").click()
    await expect(dialog).to_be_hidden()
    # A click does the same.
    await failed_row.click()
    await expect(dialog).to_be_visible()


async def test_phase_estimation_is_shown_and_equals_the_api(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    run_id = await stack.submit(
        {
            "name": "estimated",
            "phases": [
                {"name": "plan", "calls": 3, "concurrency": 2, "predicted_tokens": 200, "env": FAST_CALLS},
                {"name": "build", "calls": 4, "concurrency": 2, "predicted_tokens": 900, "env": FAST_CALLS},
                {"name": "check", "calls": 2, "concurrency": 2, "env": FAST_CALLS},
            ],
        },
        token,
    )
    await page.goto(f"/runs/{run_id}")
    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=SLOW)
    answer = await stack.http.get(f"/api/runs/{run_id}/estimation")
    answer.raise_for_status()
    estimation = answer.json()
    results = {r["phase_id"].split("/", 1)[1]: r for r in estimation["samples"]}
    inputs = {s["phase_id"].split("/", 1)[1]: s for s in estimation["inputs"]}
    assert set(results) == {"plan", "build"}, results
    for name, result in results.items():
        phase = page.locator(f'[data-testid="phase-progress"] [data-phase="{name}"]')
        await expect(phase).to_have_attribute("data-state", "finished", timeout=QUICK)
        await expect(phase.locator('[data-field="predicted"]')).to_have_text(str(inputs[name]["predicted_tokens"]))
        await expect(phase.locator('[data-field="actual"]')).to_have_text(str(inputs[name]["actual_tokens"]))
        await expect(phase.locator('[data-field="smape"]')).to_have_text(f"{result['smape']:.0f} %")
        await expect(phase.locator('[data-field="waste"]')).to_have_text(f"{result['waste_ratio']:.2f}\u00d7")
    # A phase without a prediction says so instead of inventing one.
    check = page.locator('[data-testid="phase-progress"] [data-phase="check"]')
    await expect(check.locator('[data-field="smape"]')).to_have_text("—")
    # The chart states its bucket size and draws nothing past the last event.
    await expect(page.get_by_test_id("calls-bucket")).to_have_text(re.compile(r"^Per \d+ s bucket: "))


async def test_a_running_run_shows_an_estimated_end_from_its_throughput(stack, browser, login, make_token):
    token = await make_token("alice", "submit")
    page = await login(await browser.new_context(), token)
    slow = {"FPF_SIM_LATENCY_MS": "300", "FPF_SIM_JITTER_MS": "30"}
    run_id = await stack.submit(
        {"name": "eta", "phases": [{"name": "generate", "calls": 60, "concurrency": 2, "env": slow}]}, token
    )
    await page.goto(f"/runs/{run_id}")
    eta = page.get_by_test_id("eta")
    await expect(eta).to_have_text(
        re.compile(r"^≈ (\d+m )?\d+s \(estimate: \d+\.\d calls/s, last 60 s\)$"), timeout=SLOW
    )
    await expect(page.get_by_test_id("run-reason")).to_have_text("in progress")
    await expect(page.get_by_test_id("cancel-button")).to_be_visible()
    await page.get_by_test_id("cancel-button").click()
    await page.get_by_test_id("cancel-confirm").click()
    await expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=SLOW)
    await expect(eta).to_have_text("—")
    await expect(page.get_by_test_id("cancel-button")).to_be_hidden()


async def test_the_bundled_demo_succeeds_with_recovered_failures_on_the_page(stack, browser, login, make_token):
    """The run `make run` shows a newcomer, end to end. Seeded (FPF_SIM_SEED) so the simulator's
    draws are those the demo test checks; LIVESTATS_UPDATE_SCREENSHOT=1 saves the README's pictures."""
    spec = demo_spec().model_dump(mode="json", exclude_none=True)
    for phase in spec["phases"]:
        phase["env"]["FPF_SIM_SEED"] = "0"
    token = await make_token("alice", "submit")
    context = await browser.new_context(DESKTOP)
    page = await login(context, token)
    run_id = await stack.submit(spec, token)
    await page.goto(f"/runs/{run_id}")
    await expect(page.get_by_test_id("run-status")).to_have_text("succeeded", timeout=120_000)
    snap = await stack.snapshot(run_id)
    assert snap["retries"] > 0 and snap["failed_attempts"] > 0 and snap["calls_given_up"] == 0, snap
    await expect(page.get_by_test_id("run-reason")).to_contain_text("completed")
    await assert_no_horizontal_overflow(page)
    if os.environ.get("LIVESTATS_UPDATE_SCREENSHOT") == "1":  # the README's pictures, on request only
        await page.wait_for_timeout(1_000)  # the charts redraw at most twice a second
        await browser.screenshot(page, path=SCREENSHOTS / "run-page.png")
        await page.set_viewport_size(PHONE)
        await page.wait_for_timeout(1_000)
        await assert_no_horizontal_overflow(page)
        await browser.screenshot(page, path=SCREENSHOTS / "run-page-phone.png")
        await page.goto("/")
        await expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_be_visible(timeout=QUICK)
        await browser.screenshot(page, path=SCREENSHOTS / "runs-page-phone.png")
        await page.set_viewport_size(DESKTOP)
        await browser.screenshot(page, path=SCREENSHOTS / "runs-page.png")
