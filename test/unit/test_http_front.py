"""The API's ASGI front: bodies are read whole before the WSGI app runs, within the limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from flask import Flask, jsonify, request

from api_server import http_front
from api_server.http_front import BufferedWsgi

LIMIT = 1000


def echo_app(limit: int) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limit

    @app.post("/echo")
    def echo() -> Any:
        data = request.get_data()
        response = jsonify({"bytes": len(data), "length": request.content_length})
        response.headers["X-Custom-Header"] = "yes"
        return response

    return app


def call(
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    limit: int = LIMIT,
    receive: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> tuple[int, dict, bytes]:
    """One request through the front, its body arriving in ``chunks`` (or from ``receive``)."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def next_piece() -> dict[str, Any]:
        await asyncio.sleep(0)  # a slow client: every piece is a separate event
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 5000),
    }
    front = BufferedWsgi(echo_app(limit), max_body_bytes=limit, threads=2)
    asyncio.run(front(scope, receive or next_piece, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def test_a_chunked_body_reaches_the_app_whole_with_its_length() -> None:
    status, headers, body = call([b"a" * 10] * 50, [(b"transfer-encoding", b"chunked")])
    assert status == 200
    assert body == b'{"bytes":500,"length":500}\n'
    # Header names go out as the app spelled them.
    assert headers[b"Content-Type"] == b"application/json"
    assert headers[b"X-Custom-Header"] == b"yes"


def test_a_chunked_body_over_the_limit_is_cut_and_refused_as_too_large() -> None:
    status, _headers, _body = call([b"a" * 100] * 50, [(b"transfer-encoding", b"chunked")])
    assert status == 413


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body() -> None:
    status, _headers, _body = call([b"never read"], [(b"content-length", b"5000")])
    assert status == 413


def test_a_body_larger_than_memory_buffering_is_replayed_from_disk() -> None:
    # Above BODY_IN_MEMORY_BYTES the body waits in a temporary file; the app gets every byte.
    big = 3 * 1024 * 1024
    status, _headers, body = call([b"x" * (1024 * 1024)] * 3 + [b""], [], limit=big + 10)
    assert status == 200
    assert b'"bytes":3145728' in body


def test_a_body_that_stalls_is_a_408_json_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_front, "BODY_IDLE_TIMEOUT_S", 0.05)

    async def never() -> dict[str, Any]:
        await asyncio.sleep(10)  # the client never sends its body
        raise AssertionError("not reached")

    status, headers, body = call([], [], receive=never)
    assert status == 408
    assert {name.lower(): value for name, value in headers.items()}[b"connection"] == b"close"
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_chunk_sizes_are_followed_across_reads_and_extensions() -> None:
    sizes = http_front.ChunkSizes(limit=100)
    # Two chunks within the limit, the second's size line split between two reads.
    assert not sizes.too_large(b"10;name=value\r\n" + b"a" * 16 + b"\r\n4")
    assert not sizes.too_large(b"0\r\n" + b"b" * 64 + b"\r\n")
    assert sizes.too_large(b"65\r\n")  # 101 bytes declared
    assert http_front.ChunkSizes(limit=100).too_large(b"1" * 18 + b"\r\nabc")


def test_chunk_sizes_stop_at_the_last_chunk_and_at_what_h11_refuses() -> None:
    done = http_front.ChunkSizes(limit=100)
    assert not done.too_large(b"0\r\n\r\nffffff\r\n")  # trailers and what follows: not sizes
    assert done.done
    for malformed in (b"zz\r\n", b"-5\r\n", b"1" * 40 + b"\r\n"):
        follower = http_front.ChunkSizes(limit=100)
        assert not follower.too_large(malformed + b"ffffff\r\n")
        assert follower.done


GUNICORN_DEFAULT = ["127.0.0.1", "::1"]  # forwarded_allow_ips without FORWARDED_ALLOW_IPS


def forwarded(
    peer: str, headers: list[tuple[bytes, bytes]], allowed: list[str] = GUNICORN_DEFAULT
) -> tuple[tuple[str, int], str]:
    """(client, scheme) of a request from ``peer`` after the proxy rule."""
    scope: dict[str, Any] = {"client": (peer, 4000), "scheme": "http", "headers": headers}
    http_front.Proxies(allowed).apply(scope)
    return scope["client"], scope["scheme"]


def test_a_trusted_proxy_gives_the_client_and_scheme() -> None:
    via_proxy = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    assert forwarded("127.0.0.1", via_proxy) == (("203.0.113.7", 0), "https")
    assert forwarded("::1", via_proxy) == (("203.0.113.7", 0), "https")
    # The first address from the right the proxies do not trust: a client's own header
    # (spoofed or not) is left of what its proxy appended.
    chain = [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.7:8080, 127.0.0.1")]
    assert forwarded("127.0.0.1", chain) == (("203.0.113.7", 8080), "http")
    two_headers = [(b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"[2001:db8::5]:7")]
    assert forwarded("127.0.0.1", two_headers)[0] == ("2001:db8::5", 7)
    # All trusted: the first; a network trusts its addresses.
    inside = [(b"x-forwarded-for", b"10.0.0.5, 10.0.0.6")]
    assert forwarded("10.1.2.3", inside, ["10.0.0.0/8"])[0] == ("10.0.0.5", 0)
    # "*" trusts any peer and takes the first entry, as uvicorn did.
    assert forwarded("192.0.2.9", chain, ["*"]) == (("198.51.100.1", 0), "http")


def test_proxy_headers_from_anyone_else_or_with_other_values_are_ignored() -> None:
    spoofed = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]
    assert forwarded("192.0.2.9", spoofed) == (("192.0.2.9", 4000), "http")
    assert forwarded("10.0.0.1", spoofed, ["10.0.0.0/31"]) == (("203.0.113.7", 0), "https")
    assert forwarded("10.0.0.2", spoofed, ["10.0.0.0/31"]) == (("10.0.0.2", 4000), "http")
    # Only http and https are schemes; an empty header names no client.
    odd = [(b"x-forwarded-for", b""), (b"x-forwarded-proto", b"ftp")]
    assert forwarded("127.0.0.1", odd) == (("127.0.0.1", 4000), "http")
    # The last X-Forwarded-Proto counts.
    twice = [(b"x-forwarded-proto", b"http"), (b"x-forwarded-proto", b"https")]
    assert forwarded("127.0.0.1", twice)[1] == "https"
    assert forwarded("127.0.0.1", [])[1] == "http"
