"""The web page at ``/``: drop a document, watch the job, read the text over the page image.
Plain files in the package (no build step, no CDN), on the public v1 API only; the page loads
without a key and asks for one when the API answers 401."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from flask import Blueprint, Response, request

from ocr_common.errors import NotFound

bp = Blueprint("web", __name__)

ASSET_DIR = "page"
# The files the page is made of, and their types. Nothing else is served from the folder.
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
# The page links each asset with ?v=<its hash>: a new version is a new URL, so an asset may be
# kept a year; asked for without that version, an hour.
VERSIONED_MAX_AGE_S = 365 * 24 * 3600
UNVERSIONED_MAX_AGE_S = 3600
# Only this origin's own files and API; images come from the file the user picked (blob:).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("api_server").joinpath(ASSET_DIR, name).read_bytes()


@functools.cache
def _version(name: str) -> str:
    return hashlib.sha256(_asset(name)).hexdigest()[:16]


@functools.cache
def _page() -> bytes:
    html = _asset("index.html").decode("utf-8")
    for name in ASSETS:
        html = html.replace(f"/web/{name}", f"/web/{name}?v={_version(name)}")
    return html.encode("utf-8")


def _served(response: Response) -> Response:
    """With an ETag (a 304 when the browser has this version) and the page's policy."""
    response.add_etag()
    response.make_conditional(request)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def index() -> Response:
    """The page; revalidated on each visit (cheap: an ETag), so new assets are seen at once."""
    response = Response(_page(), mimetype="text/html")
    response.cache_control.no_cache = True
    return _served(response)


@bp.get("/web/<name>")
def asset(name: str) -> Response:
    """One of the page's files, cacheable."""
    if name not in ASSETS:
        raise NotFound(f"no file {name[:64]!r} here", code="not_found")
    response = Response(_asset(name), mimetype=ASSETS[name])
    response.cache_control.public = True
    versioned = request.args.get("v") == _version(name)
    response.cache_control.max_age = VERSIONED_MAX_AGE_S if versioned else UNVERSIONED_MAX_AGE_S
    response.cache_control.immutable = versioned
    return _served(response)
