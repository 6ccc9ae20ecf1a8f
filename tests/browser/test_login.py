"""The login link in Chromium: `next` never leaves the gateway's origin, and a link never
silently replaces the session of a browser that is already logged in (issue 15)."""

from __future__ import annotations

from urllib.parse import quote

import httpx
from gateway_fixtures import bearer
from playwright.async_api import expect

QUICK = 15_000  # ms: one navigation on a busy machine
# Each is tried as the decoded value of `next` and as it stands in the URL's query.
OFF_ORIGIN = ("/\\host", "//host", "https://x", "%2F%2Fhost", "/%5Chost", "/%2F%2Fhost", "/%255Chost", "\\\\host")


async def test_next_stays_on_the_gateways_origin_whatever_it_says(browser, stack, make_token):
    token = await make_token("alice", "read")
    page = await (await browser.new_context()).new_page()
    origin = stack.gateway.http
    # The positive control: a same-origin path is followed, query included.
    await page.goto(f"/login?next={quote('/?status=running', safe='')}#token={token}")
    await page.wait_for_url(f"{origin}/?status=running", timeout=QUICK)
    await expect(page.get_by_test_id("whoami")).to_have_text("alice", timeout=QUICK)
    for value in OFF_ORIGIN:
        for in_query in (quote(value, safe=""), value):
            await page.goto(f"/login?next={in_query}#token={token}")
            await page.wait_for_url(f"{origin}/", timeout=QUICK)
            await expect(page.get_by_test_id("whoami")).to_have_text("alice", timeout=QUICK)
            assert page.url == f"{origin}/", (value, in_query, page.url)
            assert token not in page.url


async def test_a_login_link_while_logged_in_asks_and_never_switches_by_itself(browser, stack, login, make_token):
    alice, mallory = await make_token("alice", "read"), await make_token("mallory", "read")
    # The server's answer to a login over another token's session: Chromium logs every 409.
    browser.allow_console_error(r"status of 409 \(Conflict\)", r"/api/session$")
    context = await browser.new_context()
    page = await login(context, alice)
    first_session = next(c["value"] for c in await context.cookies() if c["name"] == "livestats_session")

    await page.goto(f"/login#token={mallory}")
    message = page.get_by_test_id("login-message")
    await expect(message).to_have_text(
        "This browser is logged in as alice. This link logs in as mallory.", timeout=QUICK
    )
    await expect(page.get_by_test_id("login-switch")).to_have_text("Switch to mallory")
    assert mallory not in page.url  # the token left the address bar before any question
    await page.get_by_test_id("login-stay").click()
    await page.wait_for_url(f"{stack.gateway.http}/", timeout=QUICK)
    await expect(page.get_by_test_id("whoami")).to_have_text("alice", timeout=QUICK)

    await page.goto(f"/login#token={mallory}")
    await page.get_by_test_id("login-switch").click()
    await page.wait_for_url(f"{stack.gateway.http}/", timeout=QUICK)
    await expect(page.get_by_test_id("whoami")).to_have_text("mallory", timeout=QUICK)
    # The session it replaced is over, not merely forgotten by this browser.
    async with httpx.AsyncClient(base_url=stack.gateway.http, timeout=10) as other:
        stale = await other.get("/api/session", headers={"Cookie": f"livestats_session={first_session}"})
        assert stale.status_code == 401
        assert (await other.get("/api/session", headers=bearer(alice))).status_code == 200  # the token lives on
