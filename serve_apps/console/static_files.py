"""The console's vendored static files (HTMX, the style sheet), served by name.

Guarantees: only the files in `FILES` are served (no path from the request reaches the file
system); each with its content type and an hour of caching; HTMX's version and licence are
in `static/VERSIONS` and `static/htmx.LICENSE`, and `/console/static/htmx.LICENSE` serves the
licence with the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from starlette.responses import Response

from storage.errors import NotFound

STATIC: Final = Path(__file__).parent / "static"
FILES: Final = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "htmx.LICENSE": "text/plain; charset=utf-8",
    "VERSIONS": "text/plain; charset=utf-8",
}

router = APIRouter()


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    media_type = FILES.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name!r}")
    return Response((STATIC / name).read_bytes(), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=3600"})
