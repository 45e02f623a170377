"""The OpenAPI 3.1 document at ``/openapi.json``, made from every view's ``Operation`` and the
pydantic models, and Swagger UI at ``/docs`` (flask-swagger-ui, served here: no CDN)."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .access import PROTECTED_BLUEPRINTS

API_TITLE = "OCR service"
API_VERSION = "1.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"
# The tag of each blueprint's operations.
TAGS = {"compat": "original", "v1": "v1", "ops": "operations"}
_PATH_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# How a key is sent (access.presented_key); Swagger UI's "Authorize" asks for either.
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key, as Authorization: Bearer <key> (when OCR_API_KEYS is set)",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "an API key, as X-API-Key: <key> (when OCR_API_KEYS is set)",
    },
}
# Either scheme, or none: keys are on only where the operator set OCR_API_KEYS.
KEY_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {}]
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
    example: Any = None
    required: bool = False  # a path parameter always is


@dataclass(frozen=True)
class Body:
    """A response or request body: a pydantic model or a raw JSON schema per media type, each
    with its own example unless ``examples`` gives one for it."""

    description: str
    content: dict[str, type[BaseModel] | dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)


View = Callable[..., Any]


@dataclass(frozen=True)
class Operation:
    """What a view takes and answers; as a decorator, attached to the view."""

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


@functools.cache
def _model_example(model: type[BaseModel]) -> Any:
    return model.model_json_schema().get("examples", [None])[0]


def _example(value: type[BaseModel] | dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return value.get("examples", [None])[0]
    return _model_example(value)


def _body(body: Body) -> dict[str, Any]:
    out: dict[str, Any] = {"description": body.description}
    if body.content:
        out["content"] = {}
        for media, schema in body.content.items():
            entry = out["content"][media] = {"schema": _schema(schema)}
            example = body.examples.get(media, _example(schema))
            if example is not None:
                entry["example"] = example
    if body.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in body.headers.items()
        }
    return out


def _param(param: Param) -> dict[str, Any]:
    out = {
        "name": param.name,
        "in": param.where,
        "required": param.required or param.where == "path",
        "description": param.description,
        "schema": param.schema,
    }
    if param.example is not None:
        out["example"] = param.example
    return out


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every documented view of ``app``, and of its webhooks."""
    paths: dict[str, dict[str, Any]] = {}
    webhooks: dict[str, Operation] = app.extensions.get(WEBHOOKS_EXTENSION, {})
    operations: list[Operation] = list(webhooks.values())
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        op: Operation | None = getattr(view, "__openapi__", None)
        if op is None:
            continue
        operations.append(op)
        path = _PATH_ARG.sub(r"{\1}", rule.rule)
        declared = {p.name for p in op.params if p.where == "path"}
        params = [
            {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
            for arg in sorted(rule.arguments - declared)
        ]
        params += [_param(p) for p in op.params]
        blueprint = rule.endpoint.partition(".")[0]
        entry: dict[str, Any] = {
            "operationId": rule.endpoint.replace(".", "_"),
            "summary": op.summary,
            "tags": [TAGS[blueprint]],
            "responses": {str(status): _body(body) for status, body in op.responses.items()},
        }
        if blueprint in PROTECTED_BLUEPRINTS:
            entry["security"] = KEY_SECURITY
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
            "and the original API (/image-sync, /image, /allimages). With API keys on "
            "(OCR_API_KEYS), the operations with a lock need one: Authorize, then try them.",
        },
        # The v1 API first: it is the one to use.
        "tags": [{"name": TAGS[name]} for name in ("v1", "compat", "ops")],
        "paths": paths,
        "webhooks": {
            name: {
                "post": {
                    "summary": op.summary,
                    "description": op.description,
                    "parameters": [_param(p) for p in op.params],
                    "requestBody": {"required": True, **_body(op.request)} if op.request else {},
                    "responses": {str(code): _body(body) for code, body in op.responses.items()},
                }
            }
            for name, op in webhooks.items()
        },
        "components": {
            "schemas": components.get("$defs", {}),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document of this server."""
    spec = current_app.extensions.get("ocr_openapi")
    if spec is None:
        spec = current_app.extensions["ocr_openapi"] = build_spec(current_app)
    return jsonify(spec)


DOCS_PATH = "/docs"
SWAGGER_UI_CONFIG = {
    "app_name": f"{API_TITLE} API",
    # Swagger UI would ask validator.swagger.io for a badge: nothing leaves this server.
    "validatorUrl": None,
    # Else built from the request's Host header, which would then be written into the page.
    "oauth2RedirectUrl": f"{DOCS_PATH}/oauth2-redirect.html",
    # No top bar: its field loads other documents, from elsewhere.
    "layout": "BaseLayout",
    "displayRequestDuration": True,
}


def _inline_hashes(page: str) -> list[str]:
    """CSP sources for each inline <script> of the page: the SHA-256 of its exact text."""
    found = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() for text in found)
    return [f"'sha256-{digest}'" for digest in digests]


@functools.cache
def docs_csp(page: str) -> str:
    """Swagger UI's files and its one inline script from this server; requests to it only."""
    scripts = " ".join(["'self'", *_inline_hashes(page)])
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def docs_blueprint() -> Blueprint:
    """Swagger UI at /docs (and /docs/), its files under /docs/, on /openapi.json."""
    docs = get_swaggerui_blueprint(
        DOCS_PATH, "/openapi.json", config=SWAGGER_UI_CONFIG, blueprint_name="docs"
    )

    @docs.after_request
    def policy(response: Response) -> Response:
        # The page (rendered) by the hashes of its inline script; its files (streamed) with none.
        page = "" if response.direct_passthrough else response.get_data(as_text=True)
        response.headers["Content-Security-Policy"] = docs_csp(page)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # The page itself at /docs too, without a redirect to /docs/.
    docs.add_url_rule("", endpoint="show", strict_slashes=False)
    return docs
