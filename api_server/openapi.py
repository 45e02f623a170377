"""The OpenAPI 3.1 document, generated from the routes and the pydantic models in the code.

A view says what it takes and answers with the ``Operation`` decorator; ``build_spec`` walks the
app's URL map and puts every documented view in the document. ``/openapi.json`` serves it and
``/docs`` a self-contained page that renders it (no CDN: it works offline).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

API_TITLE = "OCR service"
API_VERSION = "1.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"
# The tag of each blueprint's operations.
TAGS = {"compat": "original", "v1": "v1", "ops": "operations"}
_PATH_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# The requests the service itself sends (OpenAPI 3.1 "webhooks"): name -> Operation, added to
# app.extensions by the blueprint that sends them.
WEBHOOKS_EXTENSION = "ocr_openapi_webhooks"

bp = Blueprint("openapi", __name__)


@dataclass(frozen=True)
class Param:
    """A query, path or header parameter."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    where: str = "query"


@dataclass(frozen=True)
class Body:
    """A response or request body: a pydantic model per media type, or a raw JSON schema."""

    description: str
    content: dict[str, type[BaseModel] | dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


View = Callable[..., Any]


@dataclass(frozen=True)
class Operation:
    """What a view takes and answers; as a decorator, attached to the view (nothing else about
    the view changes)."""

    summary: str
    responses: dict[int, Body]
    description: str = ""
    params: tuple[Param, ...] = ()
    request: Body | None = None

    def __call__(self, view: View) -> View:
        view.__openapi__ = self  # type: ignore[attr-defined]
        return view


def _models(operations: list[Operation]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for op in operations:
        bodies = list(op.responses.values()) + ([op.request] if op.request else [])
        for body in bodies:
            for schema in body.content.values():
                if isinstance(schema, type) and issubclass(schema, BaseModel):
                    found[schema.__name__] = schema
    return list(found.values())


def _schema(value: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {"$ref": REF_TEMPLATE.format(model=value.__name__)}


def _body(body: Body) -> dict[str, Any]:
    out: dict[str, Any] = {"description": body.description}
    if body.content:
        out["content"] = {
            media: {"schema": _schema(schema)} for media, schema in body.content.items()
        }
    if body.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in body.headers.items()
        }
    return out


def _params(op: Operation) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "in": p.where,
            "required": False,
            "description": p.description,
            "schema": p.schema,
        }
        for p in op.params
    ]


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every documented view of ``app``, and of its webhooks."""
    paths: dict[str, dict[str, Any]] = {}
    webhooks: dict[str, Operation] = app.extensions.get(WEBHOOKS_EXTENSION, {})
    operations: list[Operation] = list(webhooks.values())
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        op: Operation | None = getattr(view, "__openapi__", None)
        # The original API answers with and without a trailing slash: document one of them.
        if op is None or rule.endpoint.endswith("_slash"):
            continue
        operations.append(op)
        path = _PATH_ARG.sub(r"{\1}", rule.rule)
        params = [
            {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
            for arg in sorted(rule.arguments)
        ]
        params += _params(op)
        entry: dict[str, Any] = {
            "operationId": rule.endpoint.replace(".", "_"),
            "summary": op.summary,
            "tags": [TAGS[rule.endpoint.partition(".")[0]]],
            "responses": {str(status): _body(body) for status, body in op.responses.items()},
        }
        if op.description:
            entry["description"] = op.description
        if params:
            entry["parameters"] = params
        if op.request is not None:
            entry["requestBody"] = {"required": True, **_body(op.request)}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = entry
    _, components = models_json_schema(
        [(model, "serialization") for model in _models(operations)], ref_template=REF_TEMPLATE
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": "Tesseract OCR over HTTP: the v1 API (documents, word boxes, jobs) "
            "and the original API (/image-sync, /image, /allimages).",
        },
        "paths": paths,
        "webhooks": {
            name: {
                "post": {
                    "summary": op.summary,
                    "description": op.description,
                    "parameters": _params(op),
                    "requestBody": {"required": True, **_body(op.request)} if op.request else {},
                    "responses": {str(code): _body(body) for code, body in op.responses.items()},
                }
            }
            for name, op in webhooks.items()
        },
        "components": {"schemas": components.get("$defs", {})},
    }


@functools.cache
def _docs_page() -> str:
    return resources.files("api_server").joinpath("docs.html").read_text(encoding="utf-8")


def _inline_hashes(page: str, tag: str) -> str:
    """CSP sources for each inline <tag> of the page: the SHA-256 of its exact text."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() for text in found)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


@functools.cache
def docs_csp() -> str:
    """The page may run only its own inline script and style, and fetch only from this server."""
    page = _docs_page()
    return (
        f"default-src 'none'; script-src {_inline_hashes(page, 'script')}; "
        f"style-src {_inline_hashes(page, 'style')}; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document of this server."""
    spec = current_app.extensions.get("ocr_openapi")
    if spec is None:
        spec = current_app.extensions["ocr_openapi"] = build_spec(current_app)
    return jsonify(spec)


@bp.get("/docs")
def docs() -> Response:
    """Interactive documentation: reads /openapi.json, works offline."""
    response = Response(_docs_page(), mimetype="text/html")
    response.headers["Content-Security-Policy"] = docs_csp()
    return response
