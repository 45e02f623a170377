"""The web page's files as the API serves them: offline, cacheable, outside the key check.
(The page in a real browser: test/e2e/test_web_page.py.)"""

from __future__ import annotations

import re

import pytest
from fake_ocr import api_client
from flask.testing import FlaskClient

from ocr_common.db import make_engine, make_session_factory
from ocr_common.settings import hash_api_key

KEY = "web-page-key-0123456789"


@pytest.fixture
def client(sqlite_url: str) -> FlaskClient:
    sessions = make_session_factory(make_engine(sqlite_url))
    return api_client(sessions, api_keys=f"page={hash_api_key(KEY)}", rate_limit="2/minute")


def asset_links(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/web/[^"]+)"', html)


def test_the_page_loads_without_a_key_and_links_only_its_own_files(client: FlaskClient) -> None:
    for _ in range(3):  # nor is it rate limited
        response = client.get("/")
        assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    # Nothing from elsewhere: every script, style and link is this server's.
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert sorted(link.split("?")[0] for link in asset_links(html)) == [
        "/web/app.css",
        "/web/app.js",
    ]
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "no-cache" in response.headers["Cache-Control"]
    again = client.get("/", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    # The API behind it still wants the key.
    assert client.get("/v1/jobs").status_code == 401


def test_assets_are_cacheable_for_a_year_under_their_content_hash(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    types = {"app.js": "text/javascript", "app.css": "text/css"}
    for link in asset_links(html):
        response = client.get(link)
        assert response.status_code == 200
        assert response.mimetype == types[link.split("?")[0].removeprefix("/web/")]
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        unversioned = client.get(link.split("?")[0])
        assert unversioned.headers["Cache-Control"] == "public, max-age=3600"
        assert response.data == unversioned.data


@pytest.mark.parametrize("name", ["index.html", "missing.js", "..%2F__init__.py", "%2e%2e"])
def test_nothing_else_is_served_from_the_page_folder(client: FlaskClient, name: str) -> None:
    response = client.get(f"/web/{name}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
