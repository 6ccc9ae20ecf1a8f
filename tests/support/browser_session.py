"""One test's browser: fresh contexts, every console error and page error collected, screenshots.

A page that logs an error or throws fails its test (at teardown) unless the test declared that
exact error expected with `allow_console_error`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, ViewportSize
from playwright.async_api import Error as PlaywrightError

SCREENSHOTS = Path(__file__).parents[1] / "browser" / "screenshots"  # gitignored
VIEWPORT = ViewportSize(width=1280, height=900)


@dataclass(frozen=True)
class PageProblem:
    kind: str  # "console" or "pageerror"
    page_url: str
    text: str
    source: str  # the script or resource the console names ("" for page errors)

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.kind} on {self.page_url}: {self.text}{where}"


class BrowserSession:
    def __init__(self, browser: Browser, base_url: str, test_name: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.test_name = re.sub(r"[^\w.-]+", "_", test_name)
        self.contexts: list[BrowserContext] = []
        self.problems: list[PageProblem] = []
        self.allowed: list[tuple[re.Pattern[str], re.Pattern[str]]] = []  # (text, source) patterns

    async def new_context(self, viewport: ViewportSize = VIEWPORT) -> BrowserContext:
        """A fresh context (own cookies: a user of its own) on the gateway, every page watched."""
        context = await self.browser.new_context(base_url=self.base_url, viewport=viewport)
        context.on("page", self._watch)
        self.contexts.append(context)
        return context

    def allow_console_error(self, text: str, source: str = "") -> None:
        """Console errors whose text matches the regex `text` (and whose source URL matches
        `source`) are expected, not failures. Page errors (uncaught exceptions) never are."""
        self.allowed.append((re.compile(text), re.compile(source)))

    async def screenshot(self, page: Page, label: str = "", *, path: Path | None = None) -> Path:
        """Save the page as `<test>[-label].png` under tests/browser/screenshots/ (or at `path`)."""
        target = path or SCREENSHOTS / f"{self.test_name}{'-' + label if label else ''}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=target, full_page=True)
        return target

    def unexpected_problems(self) -> list[PageProblem]:
        return [
            p
            for p in self.problems
            if p.kind == "pageerror"
            or not any(text.search(p.text) and source.search(p.source) for text, source in self.allowed)
        ]

    async def close(self, *, failed: bool) -> None:
        """Save the final state of every open page (marked `failed` if the test failed), then close."""
        pages = [page for context in self.contexts for page in context.pages if not page.is_closed()]
        for number, page in enumerate(pages, start=1):
            label = "-".join(part for part in ("failed" if failed else "", str(number) if number > 1 else "") if part)
            try:
                await self.screenshot(page, label)
            except PlaywrightError as exc:  # a crashed page must not hide the test's own outcome
                print(f"screenshot of {page.url} failed: {exc}", file=sys.stderr)
        for context in self.contexts:
            await context.close()

    def _watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                source = message.location.get("url", "")
                self.problems.append(PageProblem("console", page.url, message.text, source))

        def on_page_error(error: PlaywrightError) -> None:
            self.problems.append(PageProblem("pageerror", page.url, f"{error.name}: {error.message}", ""))

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
