"""What a web page may make a browser send: a rebound Host is refused (421), a cross-site simple
request is refused (403); the service's own page and clients that are not browsers pass."""

from __future__ import annotations

import io
import json

import pytest
from fake_ocr import api_client
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.browsers import BrowserGuard
from ocr_common.errors import Forbidden, MisdirectedRequest
from ocr_common.settings import SettingsError, load_settings
from ocr_testkit.pages import HELLO_PNG, b64

BODY = json.dumps({"image_data": b64(HELLO_PNG)})
DEFAULT = BrowserGuard(frozenset())


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:5000",
        "LOCALHOST:5000",
        "localhost.:5000",
        "127.0.0.1",
        "127.0.0.1:5000",
        "[::1]",
        "[::1]:5000",
        # Any address: a browser sends one as Host only to that address, never when rebound.
        "10.0.3.7:5000",
        "[fd00::7]:80",
    ],
)
def test_loopback_names_and_addresses_are_answered_by_default(host: str) -> None:
    assert DEFAULT.allows_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "rebind.evil.example",
        "rebind.evil.example:5000",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "ocr-api",
        "",
        "localhost:99999",
        "localhost:5000:1",
        "::1",
        "user@localhost",
        "localhost/path",
    ],
)
def test_other_names_and_malformed_hosts_are_refused_by_default(host: str) -> None:
    assert not DEFAULT.allows_host(host)


def test_listed_names_domains_and_the_wildcard() -> None:
    guard = BrowserGuard(load_settings(allowed_hosts="OCR-API, .example.com").allowed_host_names)
    for host in ("ocr-api", "ocr-api:80", "example.com", "ocr.example.com:443", "localhost"):
        assert guard.allows_host(host), host
    for host in ("notexample.com", "ocr-api.evil", "example.com.evil"):
        assert not guard.allows_host(host), host
    anything = BrowserGuard(load_settings(allowed_hosts="*").allowed_host_names)
    assert anything.allows_host("rebind.evil.example")


@pytest.mark.parametrize("value", ["http://ocr.example.com", "ocr:5000", "a b", "ocr/"])
def test_allowed_hosts_takes_names_only(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OCR_ALLOWED_HOSTS", value)
    with pytest.raises(SettingsError, match="OCR_ALLOWED_HOSTS"):
        load_settings()


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/plain;charset=UTF-8",
        "TEXT/PLAIN ; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
)
@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://127.0.0.1:8080",  # another service on this machine
        "https://127.0.0.1",  # the default port of https, another than the Host's
        "http://localhost:5000",  # another name for the address is another origin too
        "127.0.0.1:5000",
    ],
)
def test_a_simple_request_from_another_origin_is_refused(
    content_type: str | None, origin: str
) -> None:
    with pytest.raises(Forbidden) as refused:
        DEFAULT.check(host="127.0.0.1:5000", origin=origin, content_type=content_type)
    assert refused.value.status == 403 and refused.value.code == "cross_origin_request"


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://LOCALHOST:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        # Behind a TLS proxy that passes Host on: the scheme's default port on both sides.
        ("ocr.example.com", "https://ocr.example.com"),
        ("ocr.example.com:443", "https://ocr.example.com"),
        ("ocr.example.com", "http://ocr.example.com:80"),
    ],
)
def test_the_services_own_origin_may_send_anything(host: str, origin: str) -> None:
    guard = BrowserGuard(frozenset({"ocr.example.com"}))
    guard.check(host=host, origin=origin, content_type="multipart/form-data; boundary=x")


def test_requests_a_browser_would_preflight_or_not_send_pass() -> None:
    # JSON (or any type but the three simple ones) is preflighted by a browser, and no answer
    # of this service allows it; clients that are not browsers send no Origin.
    DEFAULT.check(host="127.0.0.1:5000", origin="http://evil.example", content_type="image/png")
    DEFAULT.check(host="127.0.0.1:5000", origin=None, content_type="text/plain")
    DEFAULT.check(host=None, origin=None, content_type=None)  # HTTP/1.0: no Host


def test_a_wrong_host_is_a_421_that_names_the_setting() -> None:
    with pytest.raises(MisdirectedRequest) as refused:
        DEFAULT.check(host="rebind.evil.example:5000", origin=None, content_type=None)
    assert refused.value.status == 421 and refused.value.code == "invalid_host"
    assert "OCR_ALLOWED_HOSTS" in refused.value.message


def test_a_rebound_host_reads_no_job(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions)
    task = client.post("/image", data=BODY).get_json()["task_id"]
    rebound = {"Host": "rebind.evil.example:5000"}
    for path in ("/allimages", f"/image?task_id={task}", "/v1/jobs", f"/v1/jobs/{task}", "/"):
        answer = client.get(path, headers=rebound)
        assert answer.status_code == 421, path
        body = answer.get_json()
        assert (body.get("code") or body["error"]["code"]) == "invalid_host"
    for listing in ("/allimages", "/v1/jobs"):
        assert task not in client.get(listing, headers=rebound).get_data(as_text=True)
        assert task in client.get(listing).get_data(as_text=True)


@pytest.mark.parametrize(
    ("path", "content_type", "data"),
    [
        ("/image", "text/plain", BODY),
        ("/image", "application/x-www-form-urlencoded", BODY),
        ("/image", None, BODY),
        ("/image-sync", "text/plain", BODY),
        ("/v1/jobs", "multipart/form-data; boundary=b", b"--b--\r\n"),
        ("/v1/ocr", "text/plain", json.dumps({"document": b64(HELLO_PNG)})),
    ],
)
def test_a_cross_site_post_stores_nothing(
    sessions: sessionmaker[Session], path: str, content_type: str | None, data: object
) -> None:
    client = api_client(sessions)
    headers = {"Origin": "http://evil.example"}
    if content_type:
        headers["Content-Type"] = content_type
    answer = client.post(path, data=data, headers=headers)
    assert answer.status_code == 403
    body = answer.get_json()
    assert (body.get("code") or body["error"]["code"]) == "cross_origin_request"
    assert client.get("/allimages").get_json() == {}


def test_the_web_page_and_the_original_clients_keep_working(
    sessions: sessionmaker[Session],
) -> None:
    client = api_client(sessions)
    # The page: same origin, a multipart upload (Flask's test client is at http://localhost).
    page = client.post(
        "/v1/jobs",
        data={"file": (io.BytesIO(HELLO_PNG), "hello.png")},
        headers={"Origin": "http://localhost"},
    )
    assert page.status_code == 202, page.get_data(as_text=True)
    # The original clients: JSON without a Content-Type, and curl -d, with no Origin.
    assert client.post("/image", data=BODY).status_code == 200
    curl = client.post(
        "/image", data=BODY, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert curl.status_code == 200
