"""`/portal/static/…`: the portal's CSS (web/static/) and its esbuild bundle
(web/static/build/, not committed).

Only a file directly named by the path, inside one of those folders once symlinks are
resolved, with a known suffix (its type is ours, never guessed), is served: no directory
listing, no dot-file, no `..`, nothing else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from web.errors import error

STATIC = Path(__file__).resolve().parent.parent / "static"
#: Searched in this order: the build output may not shadow our own files.
FOLDERS = (STATIC, STATIC / "build")
TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
MAX_PATH = 200


def find(name: str, folders: tuple[Path, ...] = FOLDERS) -> Path | None:
    """The file `name` stands for, or None for anything that is not plainly one of ours."""
    parts = name.split("/")
    if (
        not name
        or len(name) > MAX_PATH
        or "\\" in name
        or "\0" in name
        or any(not p or p.startswith(".") for p in parts)
        or Path(name).suffix not in TYPES
    ):
        return None
    for folder in folders:
        root = folder.resolve()
        candidate = (root / name).resolve()
        if candidate.is_relative_to(root) and candidate.is_file():
            return candidate
    return None


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/portal/static/{name:path}")
    async def static(name: str) -> Response:
        path = find(name)
        if path is None:
            return error(404, "not found")
        return FileResponse(path, media_type=TYPES[path.suffix], headers={"X-Content-Type-Options": "nosniff"})

    return r
