"""`/docs` and `/redoc` are served from the package: pinned, integrity-checked assets, their
own Content-Security-Policy, nothing named from another host (issue 15). Rendering offline is
checked in Chromium (tests/browser/test_api_docs_offline.py)."""

from __future__ import annotations

import hashlib
import re

import httpx
import orjson
import pytest
from livestats_gateway.routes.pages import STATIC_DIR

DOCS = {"/docs": ("swagger-ui", "swagger-ui-dist"), "/redoc": ("redoc", "redoc")}


@pytest.mark.parametrize("folder, package", DOCS.values())
def test_the_docs_assets_match_the_hashes_recorded_with_their_npm_source(folder, package):
    manifest = orjson.loads((STATIC_DIR / "vendor" / folder / "VENDOR.json").read_bytes())
    assert manifest["package"] == package and manifest["integrity"].startswith("sha512-")
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])  # pinned, not a range
    for entry in manifest["files"].values():
        data = (STATIC_DIR / "vendor" / folder / entry["as"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["as"]


@pytest.mark.parametrize("path", DOCS)
async def test_the_docs_pages_name_only_their_own_origin_and_carry_their_own_policy(gateway, path):
    async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as anonymous:
        page = await anonymous.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?://|//[a-z]", page.text), "the page names another host"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "inline script"
        assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
        assert len(assets) >= 2
        for asset in assets:
            answer = await anonymous.get("/" + asset)
            assert answer.status_code == 200, asset
        # The dashboard keeps its stricter policy.
        shell = await anonymous.get("/")
        assert "unsafe-inline" not in shell.headers["content-security-policy"]


def test_fastapis_cdn_pages_are_off():
    from livestats_gateway.app import create_app
    from livestats_gateway.config import GatewayConfig

    app = create_app(GatewayConfig())
    assert app.docs_url is None and app.redoc_url is None
    assert "/docs/oauth2-redirect" not in {getattr(r, "path", "") for r in app.routes}
