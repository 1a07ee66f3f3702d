"""The dashboard: `GET /` (the page) and `/static/*` (its modules and styles), same origin as
the API, no build step. Every response carries the page's security headers: scripts only from
this origin (no inline script), no framing, no MIME sniffing, no referrer leaving the origin."""

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",  # the API and its WebSockets, same host
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate on every load (ETag): a new release is seen at once, an unchanged file is a 304.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> Response:
    """The dashboard page (public: in AUTH_MODE=keys it asks for a key itself)."""
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


class DashboardFiles(StaticFiles):
    """The page's static files, with the page's headers."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        return response


def static_files() -> DashboardFiles:
    return DashboardFiles(directory=STATIC_DIR)
