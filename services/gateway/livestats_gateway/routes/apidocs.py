"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), served from the
package: pinned, integrity-checked copies under static/vendor (`make vendor`, VENDOR.json), so
the pages load nothing from another origin (FastAPI's own pages load floating versions from a
CDN, on the gateway's origin).

Their Content-Security-Policy is their own, a little wider than the dashboard's: both libraries
set inline styles and ReDoc runs its search in a worker made from a blob. Scripts still come only
from this origin, and no inline script runs (each page's set-up is a file in static/js).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from .pages import SHELL_HEADERS

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = {**SHELL_HEADERS, "Content-Security-Policy": DOCS_CSP}

# Relative URLs: right under a root_path too (`/docs` -> `static/...` is `/static/...`).
_SWAGGER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livestats gateway: API</title>
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">
<link rel="stylesheet" href="static/vendor/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger-ui" data-openapi="openapi.json"></div>
<script src="static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="static/js/swagger.js"></script></body></html>
"""
_REDOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livestats gateway: API reference</title>
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,"></head>
<body><div id="redoc" data-openapi="openapi.json"></div>
<script src="static/vendor/redoc/redoc.standalone.js"></script>
<script src="static/js/redoc.js"></script></body></html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER, headers=_HEADERS)


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC, headers=_HEADERS)
