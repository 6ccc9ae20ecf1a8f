"""The dashboard's shell and assets, as the gateway serves them (the pages themselves are tested
in a real browser: tests/browser)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import orjson
from livestats_gateway.routes.pages import STATIC_DIR

SHELL_PATHS = ("/", "/runs/01jexample0000000000000000")


async def test_the_shell_is_served_for_the_runs_and_run_paths_with_a_strict_policy(gateway):
    async with httpx.AsyncClient(base_url=gateway.http) as anonymous:  # the shell holds no data: no login
        for path in SHELL_PATHS:
            answer = await anonymous.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-type"].startswith("text/html")
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert "connect-src 'self'" in policy and "default-src 'none'" in policy
            assert '<main id="view">' in answer.text


def _own_assets() -> list[Path]:
    return [p for p in STATIC_DIR.rglob("*") if p.is_file() and "vendor" not in p.parts]


def _references(text: str) -> set[str]:
    """Asset paths an HTML page names and module paths a script imports."""
    found = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', text))
    found |= {f"/static/js/{m}" for m in re.findall(r'from "\./([\w.-]+\.js)"', text)}
    return found


async def test_every_asset_the_pages_reference_is_served_from_the_package(gateway):
    async with gateway.client() as client:
        pages = [(await client.get(path)).text for path in ("/", "/login")]
        wanted = set().union(*(_references(page) for page in pages))
        seen: set[str] = set()
        while wanted - seen:  # follow module imports transitively
            path = (wanted - seen).pop()
            seen.add(path)
            answer = await client.get(path)
            assert answer.status_code == 200, path
            if path.endswith(".js"):
                assert "javascript" in answer.headers["content-type"], path
                wanted |= _references(answer.text)
        assert {
            "/static/js/main.js",
            "/static/js/run.js",
            "/static/js/login.js",
            "/static/vendor/uPlot.iife.min.js",
        } <= seen
        missing = await client.get("/static/js/nope.js")
        assert missing.status_code == 404


def test_pages_load_nothing_from_other_hosts_and_have_no_inline_script():
    for asset in _own_assets():
        text = asset.read_text()
        assert not re.search(r"https?://", text), f"{asset.name} names another host"
        if asset.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"{asset.name} has an inline script"


def test_vendored_assets_match_the_hashes_recorded_with_their_source():
    manifest = orjson.loads((STATIC_DIR / "vendor" / "VENDOR.json").read_bytes())
    assert manifest["package"] == "uplot" and manifest["integrity"].startswith("sha512-")
    for entry in manifest["files"].values():
        data = (STATIC_DIR / "vendor" / entry["as"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["as"]


async def test_the_login_page_keeps_its_script_out_of_the_page_and_is_never_cached(gateway):
    async with httpx.AsyncClient(base_url=gateway.http) as anonymous:
        answer = await anonymous.get("/login")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert "unsafe-inline" not in answer.headers["content-security-policy"]
    assert '<script type="module" src="/static/js/login.js">' in answer.text


def test_every_static_file_is_in_the_package_data_so_a_wheel_ships_it():
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["livestats_gateway"]
    package_dir = STATIC_DIR.parent
    for asset in STATIC_DIR.rglob("*"):
        if asset.is_file():
            relative = asset.relative_to(package_dir).as_posix()
            assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns), relative
