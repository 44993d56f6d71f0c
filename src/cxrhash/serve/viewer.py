"""The web viewer (issue #13): static files served by the API's own app, same origin.

``/`` is the page, ``/static/…`` its script and style sheet, all from the package (no CDN,
no build step), each answered with headers that confine the page: a CSP allowing only
this origin (no inline script, no framing), no MIME sniffing, no referrer.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(str(files("cxrhash.serve") / "static"))

#: Sent with the page and its assets. ``img-src`` adds nothing to ``default-src 'self'``
#: but names where images come from (the API's own case images).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # a new release of the viewer is picked up at once, never from a stale cache
    "Cache-Control": "no-cache",
}


class _ViewerFiles(StaticFiles):
    """Starlette's static files (which refuse paths outside the folder) plus our headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_viewer(app: FastAPI) -> None:
    """Serve the viewer from ``app``: the page at ``/``, its assets under ``/static``."""
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def viewer_page() -> FileResponse:
        """The viewer's page."""
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    app.mount("/static", _ViewerFiles(directory=STATIC_DIR), name="static")
