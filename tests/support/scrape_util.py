"""Scrapes parsed into samples, for the metrics tests."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape_text(url: str) -> str:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return response.text


def scrape(url: str) -> Samples:
    return parse(scrape_text(url))


async def wait_for_scrape(url: str, timeout_s: float = 10) -> None:
    """Wait until `url` answers (an in-process worker starts its exposition once its task runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            scrape_text(url)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
