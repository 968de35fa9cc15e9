"""GET /: the web page for asking questions and reading the articles, and its few static
files (``api/web/``, shipped as package data). Plain HTML, CSS and JavaScript: no build step,
nothing fetched from elsewhere. The page talks to the API itself (/ask/stream, /generators,
/documents), so these routes only serve files; they stay out of the OpenAPI description and
are open even when reads need an API key (the page asks for the key)."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

# URL path -> (file in api/web, media type). Only these are served.
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/style.css": ("style.css", "text/css; charset=utf-8"),
    "/web/icon.svg": ("icon.svg", "image/svg+xml"),
}
PAGE_PATHS = frozenset(FILES)

# Scripts and styles come only from the page's own files: no inline script can run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: the ETag makes that cheap, and an upgrade shows at once
}


@cache
def _load(name: str) -> tuple[bytes, str]:
    """The file's bytes and a strong ETag, read once per process."""
    data = resources.files("api").joinpath("web", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _serve(path: str, request: Request) -> Response:
    name, media_type = FILES[path]
    try:
        data, etag = _load(name)
    except FileNotFoundError:  # an install without the package data
        raise HTTPException(404, f"the web page's file {name} is not installed") from None
    headers = {**HEADERS, "ETag": etag}
    wanted = {tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")}
    if etag in wanted:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
def page(request: Request) -> Response:
    """The web page."""
    return _serve("/", request)


@router.api_route("/web/{name}", methods=["GET", "HEAD"])
def asset(name: str, request: Request) -> Response:
    """One of the page's scripts, styles or images."""
    path = f"/web/{name}"
    if path not in FILES:
        raise HTTPException(404, f"no file {name!r} here")
    return _serve(path, request)
