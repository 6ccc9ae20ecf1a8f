"""`/docs` and `/redoc` render in Chromium with every request to another origin blocked: the
operations list appears, no request left the gateway's origin, and no policy violation or other
console error occurred (the browser fixture fails a test on any)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Route, expect

SLOW = 30_000  # ms: ~1.7 MB of script parsed on a busy machine
OPERATIONS = ("/api/runs", "/api/runs/{run_id}/events", "/api/session")


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_api_docs_render_offline(browser, stack, path):
    if path == "/redoc":
        # ReDoc's sidebar always shows Redocly's logo from their CDN; the page's policy blocks it
        # before any request is made (it hides the image then). That refusal is the one expected
        # console error; any other fails the test.
        browser.allow_console_error(r"^Loading the image 'https://cdn\.redoc\.ly/redoc/logo-mini\.svg' violates")
    context = await browser.new_context()
    gateway = urlsplit(stack.gateway.http).netloc
    foreign: list[str] = []
    own: list[str] = []

    async def only_own_origin(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == gateway:
            own.append(url)
            await route.continue_()
        else:
            foreign.append(url)
            await route.abort()

    await context.route("**/*", only_own_origin)
    page = await context.new_page()
    await page.goto(path)
    if path == "/docs":
        operations = page.locator(".opblock-summary-path")
        await expect(operations.first).to_be_visible(timeout=SLOW)
        shown = "\n".join(await operations.all_inner_texts())
    else:
        operations = page.locator("[data-section-id^='operation/']")
        await expect(operations.first).to_be_attached(timeout=SLOW)
        shown = await page.locator("body").inner_text()
    shown = shown.replace("\u200b", "")  # both break long paths with zero-width spaces
    missing = [p for p in OPERATIONS if p not in shown]
    assert not missing, (missing, shown[:2000])
    assert any(url.endswith("/openapi.json") for url in own)  # it read the document from its own origin
    assert foreign == [], foreign
