"""The dashboard: one app shell for `/` (runs) and `/runs/{run_id}` (a run), and its assets.

The shell holds no data, so it is public; everything it shows comes from the authenticated API
and sockets. Assets ship inside the package (charts included) and the page may load nothing
from another origin: the Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent.parent / "static"  # the package's static/, beside routes/
ASSETS_PATH = "/static"
# 'self' covers same-origin ws:/wss: in CSP level 3 browsers. No inline script or style.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SHELL_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",  # revalidate: a new gateway version serves a new shell
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(include_in_schema=False)


def _shell() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SHELL_HEADERS)


@router.get("/")
async def runs_page() -> FileResponse:
    return _shell()


@router.get("/compare")
async def compare_page() -> FileResponse:
    return _shell()


@router.get("/runs/{run_id}")
async def run_page(run_id: str) -> FileResponse:
    # The id is validated by the API the page calls; the shell is the same for every path.
    return _shell()


def mount_assets(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="static")
