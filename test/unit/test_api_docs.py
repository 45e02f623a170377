"""/docs (Swagger UI from a pip package, served by the API itself) and what it shows: the
OpenAPI document's API-key schemes, and an example of every v1 request and answer that is
valid against its schema. test/e2e/test_web_page.py loads /docs in a real browser."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from fake_ocr import FakeOcr, api_client
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from ocr_common.db import make_engine, make_session_factory

JSON_TYPES = ("application/json", "application/problem+json")
# Request bodies of raw bytes (a file) have no example to give.
BINARY = {"type": "string", "format": "binary"}


@pytest.fixture
def client(sqlite_url: str) -> FlaskClient:
    # What is documented does not depend on the database: SQLite alone.
    return api_client(make_session_factory(make_engine(sqlite_url)), FakeOcr())


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").get_json())


def operations(spec: dict[str, Any], prefix: str = "/") -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, methods in spec["paths"].items()
        if path.startswith(prefix)
        for method, op in methods.items()
    ]


def linked(page: str) -> list[str]:
    """Every URL the page loads: scripts, style sheets, icons."""
    return re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]*)"', page)


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_docs_are_swagger_ui_served_by_this_server_alone(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger-ui-bundle.js" in page and '"url": "/openapi.json"' in page
    # Nothing from elsewhere: no other origin named, not even Swagger's validator badge.
    assert not re.search(r"https?://|//[a-z]", page, re.IGNORECASE), page
    assert '"validatorUrl": null' in page
    urls = linked(page)
    assert len(urls) >= 4
    for url in urls:
        assert url.startswith("/docs/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype in ("text/javascript", "text/css", "image/png"), url
        if asset.mimetype == "text/css":
            # No font or image from another origin (a browser would fetch those itself).
            css = asset.get_data(as_text=True)
            assert "url(" not in css.replace("url(data:", "").replace('url("data:', ""), url


def test_the_docs_may_load_and_call_nothing_but_this_server(client: FlaskClient) -> None:
    response = client.get("/docs")
    directives = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    # Scripts: this server's files, and the page's one inline script (Swagger UI's settings)
    # by its hash.
    page = response.get_data(as_text=True)
    [inline] = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert directives["script-src"].split() == ["'self'", f"'sha256-{digest}'"]
    assert not re.search(r"<[^>]+\s(on\w+|style)=", page)


def test_the_home_made_docs_page_is_gone(client: FlaskClient) -> None:
    from importlib import resources

    assert not resources.files("api_server").joinpath("docs.html").is_file()


def test_api_keys_are_a_security_scheme_on_every_route_that_needs_one(
    spec: dict[str, Any],
) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["bearer"].items()
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes[
        "apiKey"
    ].items()
    for path, method, op in operations(spec):
        protected = path.startswith("/v1/") or path in ("/image", "/image-sync", "/allimages")
        if protected:
            # Either header, or none where the operator left keys off.
            assert op["security"] == [{"bearer": []}, {"apiKey": []}, {}], (path, method)
            assert "401" in op["responses"], (path, method)
        else:
            assert "security" not in op, (path, method)


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of ``schema`` whose #/components/... references are the document's."""
    return Draft202012Validator({**schema, "components": spec["components"]})


def test_every_v1_request_and_answer_has_an_example_valid_against_its_schema(
    spec: dict[str, Any],
) -> None:
    v1 = operations(spec, "/v1/")
    assert len(v1) >= 5
    for path, method, op in v1:
        where = f"{method.upper()} {path}"
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert "example" in param, (where, param["name"])
        if "requestBody" in op:
            content = op["requestBody"]["content"]
            assert "example" in content["application/json"], where
        for status, response in op["responses"].items():
            for media, entry in response.get("content", {}).items():
                if entry["schema"] == BINARY:
                    continue
                assert "example" in entry, (where, status, media)
                if media in JSON_TYPES:
                    validator(spec, entry["schema"]).validate(entry["example"])
                    if media == "application/problem+json":
                        assert entry["example"]["status"] == int(status), (where, status)
        if "requestBody" in op:
            entry = op["requestBody"]["content"]["application/json"]
            validator(spec, entry["schema"]).validate(entry["example"])


def test_every_json_example_in_the_document_is_valid_against_its_schema(
    spec: dict[str, Any],
) -> None:
    checked = 0
    for _path, _method, op in operations(spec):
        bodies = [op.get("requestBody", {}), *op["responses"].values()]
        for body in bodies:
            for media, entry in body.get("content", {}).items():
                if media in JSON_TYPES and "example" in entry:
                    validator(spec, entry["schema"]).validate(entry["example"])
                    checked += 1
    for name, schema in spec["components"]["schemas"].items():
        for value in schema.get("examples", []):
            validator(spec, {"$ref": f"#/components/schemas/{name}"}).validate(value)
            checked += 1
    assert checked >= 50


def test_the_json_request_example_is_a_document_the_api_takes(
    client: FlaskClient, spec: dict[str, Any]
) -> None:
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    response = client.post("/v1/jobs", json=body["example"])
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["format"] == "PNG"
