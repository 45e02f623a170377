"""The HTTP edges of both services: malformed framing, OPTIONS, security headers, banners,
and a body over the limit that the client sends whole before it reads."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from ocr_testkit.bad_inputs import limit_bytes
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]


def exchange(url: str, request: bytes, timeout_s: float = 10) -> bytes:
    """Send raw bytes, read until the server closes."""
    parts = urlsplit(url)
    reply = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", id="chunk size not hex"),
        pytest.param(b"5\r\nabcdefgh\r\n0\r\n\r\n", id="chunk longer than its size"),
        pytest.param(b"-5\r\nabcde\r\n0\r\n\r\n", id="negative chunk size"),
        pytest.param(b"1" * 40 + b"\r\n", id="chunk size of 40 digits"),
        # Sizes h11 parses, but larger than a request may be: refused at once, not after the
        # body timeout (the client sends no more).
        pytest.param(b"1" * 18 + b"\r\nabc", id="chunk size of 18 digits"),
        pytest.param(b"%x\r\nabc" % (limit_bytes() + 1), id="chunk one byte over the limit"),
        pytest.param(b"10\r\n0123456789abcdef\r\n" + b"f" * 20 + b"\r\n", id="later chunk"),
    ],
)
def test_a_malformed_chunked_body_is_a_400_json_error(stack: Stack, request_bytes: bytes) -> None:
    head = b"POST /image HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    started = time.monotonic()
    status, headers, body = split(exchange(stack.api_url, head + request_bytes))
    assert time.monotonic() - started < 5
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert headers["x-content-type-options"] == "nosniff"
    assert requests.get(stack.url("/healthz"), timeout=5).status_code == 200


@pytest.mark.parametrize("spelling", [b"Chunked", b"CHUNKED", b" chunked "])
def test_a_chunk_over_the_limit_is_refused_at_once_however_chunked_is_spelled(
    stack: Stack, spelling: bytes
) -> None:
    # HTTP compares transfer codings case-insensitively (h11 gives the value lower-cased).
    head = b"POST /image HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: %s\r\n\r\n" % spelling
    started = time.monotonic()
    status, headers, body = split(exchange(stack.api_url, head + b"1" * 18 + b"\r\nabc"))
    assert time.monotonic() - started < 5
    assert (status, json.loads(body)["error"]["code"]) == (400, "bad_request")


def test_a_request_framed_both_ways_is_answered_then_the_connection_closed(stack: Stack) -> None:
    # Content-Length and Transfer-Encoding: a proxy in front may read the body by its length,
    # this server reads it chunked; what follows the last chunk must not run as a request.
    smuggled = b"GET /allimages HTTP/1.1\r\nHost: localhost\r\n\r\n"
    request = (
        b"POST /image HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
    )
    reply = exchange(stack.api_url, request, timeout_s=10)  # read until the server closes
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    status, headers, _body = split(reply)
    assert status == 400 and headers["connection"] == "close"


def header_names(reply: bytes) -> list[str]:
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1")
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n")[1:]]


@pytest.mark.parametrize(
    "request_line",
    [
        "GET /",
        "GET /web/app.js",
        "GET /docs",
        "GET /openapi.json",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /allimages",
        "GET /image?task_id=x",
        "GET /v1/jobs",
        "GET /v1/languages",
        "GET /v1/jobs/x",
        "GET /nope",
        "POST /image",
        "DELETE /image",
        "OPTIONS /image",
    ],
)
def test_no_answer_repeats_a_header(stack: Stack, request_line: str) -> None:
    request = f"{request_line} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    names = header_names(exchange(stack.api_url, request.encode()))
    assert names.count("date") == 1
    assert len(names) == len(set(names)), names


def test_the_fronts_own_answers_repeat_no_header(stack: Stack) -> None:
    page = requests.get(stack.url("/"), timeout=10)
    revalidated = (
        f"GET / HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {page.headers['ETag']}\r\n"
        "Connection: close\r\n\r\n"
    )
    replies = [
        exchange(stack.api_url, revalidated.encode()),  # 304
        exchange(stack.api_url, b"NOT HTTP\r\n\r\n"),  # the front's own 400
        exchange(  # 413 by its length
            stack.api_url,
            b"POST /image HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n",
        ),
    ]
    for reply in replies:
        names = header_names(reply)
        assert len(names) == len(set(names)), (reply[:12], names)


@pytest.mark.parametrize("service", ["api", "ocr"])
def test_a_clients_path_cannot_forge_or_colour_a_log_line(stack: Stack, service: str) -> None:
    url = stack.api_url if service == "api" else stack.server_url
    marker = f"forged-{service}-{time.monotonic_ns()}"
    path = f"/x%0a%0d2026-01-01%20INFO%20{marker}%1b[31m%e2%80%ae"
    exchange(url, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    logs = stack.logs()
    assert marker in logs  # the access line was written...
    for line in logs.splitlines():
        assert not line.lstrip().startswith(f"2026-01-01 INFO {marker}"), line  # ...as one line
    assert "\x1b" not in logs and "\u202e" not in logs


@pytest.mark.parametrize(
    ("path", "wrong"),
    [
        ("/image", "DELETE"),
        ("/image-sync", "GET"),
        ("/allimages", "POST"),
        ("/v1/jobs", "PUT"),
        ("/v1/ocr", "GET"),
        ("/healthz", "POST"),
    ],
)
def test_options_answers_json_with_the_allow_header_a_405_gives(
    stack: Stack, path: str, wrong: str
) -> None:
    options = requests.options(stack.url(path), timeout=10)
    assert options.status_code == 200
    assert options.headers["Content-Type"].startswith("application/json")
    allowed = set(options.headers["Allow"].split(", "))
    assert set(options.json()["allow"]) == allowed
    refused = requests.request(wrong, stack.url(path), timeout=10)
    assert refused.status_code == 405
    assert set(refused.headers["Allow"].split(", ")) == allowed
    assert wrong not in allowed and "OPTIONS" in allowed


@pytest.mark.parametrize("path", ["/healthz", "/nope", "/docs", "/openapi.json", "/v1/jobs/x"])
def test_every_answer_is_nosniff_and_names_no_server(stack: Stack, path: str) -> None:
    response = requests.get(stack.url(path), timeout=10)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in response.headers


def test_the_ocr_server_names_no_version(stack: Stack) -> None:
    answers = [
        requests.get(f"{stack.server_url}/healthz", timeout=10).headers.get("Server", ""),
        # aiohttp answers a malformed request itself, before any handler.
        split(exchange(stack.server_url, b"NOT HTTP\r\n\r\n"))[1].get("server", ""),
    ]
    for server in answers:
        assert not re.search(r"\d|aiohttp|python", server, re.IGNORECASE), server


def test_docs_carry_a_csp_that_allows_exactly_their_inline_script(stack: Stack) -> None:
    response = requests.get(stack.url("/docs"), timeout=10)
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    page = response.text
    blocks = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"].split()
    assert "unsafe-inline" not in policy
    # The policy blocks inline handlers and style attributes: the page has none.
    assert not re.search(r"<[^>]+\s(on\w+|style)=", page)


def test_a_client_that_sends_a_body_over_the_limit_whole_reads_the_413(stack: Stack) -> None:
    # requests (http.client) writes the whole body before it reads: without a lingering close
    # it sees a reset ("broken pipe") instead of the answer.
    # Three times the limit: far more than the kernel's socket buffers hold.
    body = b'{"image_data": "' + b"A" * (3 * limit_bytes()) + b'"}'
    response = requests.post(stack.url("/image"), data=body, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    chunked = requests.post(
        stack.url("/v1/jobs"),
        data=(body[i : i + 1024 * 1024] for i in range(0, len(body), 1024 * 1024)),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert chunked.status_code == 413
    assert chunked.json()["code"] == "request_too_large"


def test_pipelined_requests_are_answered_in_order_and_head_has_no_body(stack: Stack) -> None:
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    reply = exchange(stack.api_url, request)
    statuses = re.findall(rb"^HTTP/1\.1 (\d{3}) ", reply, flags=re.MULTILINE)
    assert statuses == [b"200", b"200", b"404"], reply
    get, head, nope = re.split(rb"(?=^HTTP/1\.1 )", reply, flags=re.MULTILINE)[1:]
    assert split(head)[2] == b""
    assert int(split(head)[1]["content-length"]) == len(split(get)[2])
    assert json.loads(split(nope)[2])["error"]["code"]


def test_a_client_that_expects_100_continue_gets_it_then_the_answer(stack: Stack) -> None:
    parts = urlsplit(stack.api_url)
    body = b'{"image_data": "not base64"}'
    head = (
        b"POST /image HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status, headers, answer = split(reply)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(answer)["error"]["code"]


def test_an_idle_keep_alive_connection_is_closed_after_gunicorns_keepalive(stack: Stack) -> None:
    parts = urlsplit(stack.api_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = sock.recv(65536)
        started = time.monotonic()
        while chunk := sock.recv(65536):
            reply += chunk
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert 3 < waited < 10  # keepalive is 5 s (serve.py)
