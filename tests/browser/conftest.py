"""The dashboard in real headless Chromium (Debian's, driven by Playwright: no browser download)
against a real gateway, Redis and worker."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
from browser_session import BrowserSession
from gateway_fixtures import GatewayHandle
from playwright.async_api import BrowserContext, Page, async_playwright, expect
from proc_util import kill_all_with_env
from run_stack import Stack

NO_CHROMIUM = (
    "Chromium not found: install Debian's chromium (apt-get install chromium) or set LIVESTATS_CHROMIUM; "
    "the browser tests were skipped"
)
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so the browser fixture knows whether the test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def chromium_path() -> str:
    configured = os.environ.get("LIVESTATS_CHROMIUM")
    if configured:
        path = shutil.which(configured)
        if path is None:
            pytest.fail(f"LIVESTATS_CHROMIUM={configured!r} is not an executable")
        return path
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(NO_CHROMIUM)
    return found


@pytest.fixture
def run_ids() -> Iterator[list[str]]:
    """Runs a test submitted. Requested by `stack` before the worker, so this teardown runs after
    the worker has stopped: any FPF process still carrying FPF_RUN_ID=<run> is then killed."""
    ids: list[str] = []
    yield ids
    for run_id in ids:
        kill_all_with_env("FPF_RUN_ID", run_id)


@pytest.fixture
def gateway_overrides() -> dict[str, object]:
    """GatewayConfig fields a test sets differently (parametrize this fixture to change them)."""
    return {}


@pytest.fixture
async def stack(run_ids, start_gateway, start_worker, gateway_overrides) -> AsyncIterator[Stack]:
    # No browser test is about stall detection, and a busy machine can starve the in-process
    # worker's heartbeats for seconds: a run marked stalled mid-test would only be noise.
    gateway: GatewayHandle = start_gateway(**{"stall_margin_s": 60.0, **gateway_overrides})
    await start_worker(heartbeat_interval_s=0.5)
    async with gateway.client() as http:
        yield Stack(gateway, http, run_ids)


@pytest.fixture
async def browser(
    request: pytest.FixtureRequest, chromium_path: str, stack: Stack, make_token: object
) -> AsyncIterator[BrowserSession]:
    """A fresh headless Chromium per test, pointed at the stack's gateway, closed before the
    gateway stops and before the test's tokens are revoked (`make_token` is set up first, so torn
    down last: an open page's next request would otherwise rightly get a 401)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path, headless=True, args=["--no-sandbox"])
        session = BrowserSession(chromium, stack.gateway.http, request.node.name)
        try:
            yield session
            report = request.node.stash.get(REPORTS, {}).get("call")
            await session.close(failed=report is None or report.failed)
        finally:
            await chromium.close()
    if problems := session.unexpected_problems():
        pytest.fail("the page reported errors:\n" + "\n".join(f"  {p}" for p in problems), pytrace=False)


@pytest.fixture
def login(stack: Stack):
    """`page = await login(context, token)`: log in through /login#token=…, land on the runs page."""

    async def log_in(context: BrowserContext, token: str) -> Page:
        principal = await stack.principal(token)
        page = await context.new_page()
        await page.goto(f"/login#token={token}")
        await page.wait_for_url(f"{stack.gateway.http}/", timeout=15_000)
        await expect(page.get_by_test_id("whoami")).to_have_text(principal, timeout=15_000)
        return page

    return log_in
