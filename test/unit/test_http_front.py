"""The API's HTTP front, on a real socket: bodies are read whole before the WSGI app runs,
within the limit; the app's answer goes out as it wrote it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request

from api_server import http_front
from api_server.http_front import Front, HttpConnection, Proxies, caller_gone
from ocr_testkit.waits import wait_until_async

LIMIT = 1000
BIG = 16 * 1024 * 1024  # far more than the kernel's socket buffers hold
hung_up: list[bool] = []


def echo_app(limit: int) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limit

    @app.post("/echo")
    def echo() -> Any:
        data = request.get_data()
        response = jsonify({"bytes": len(data), "length": request.content_length})
        response.headers["X-Custom-Header"] = "yes"
        return response

    @app.get("/environ/<path:rest>")
    def environ(rest: str) -> Any:
        keys = ("PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "HTTP_X_TWICE", "CONTENT_LENGTH")
        return jsonify({key: request.environ.get(key) for key in keys})

    @app.get("/stream")
    def stream() -> Response:
        def parts() -> Iterator[bytes]:
            for index in range(40):
                yield b"%05d" % index * 2000  # 10 KB a part: 400 KB in all

        return Response(parts(), mimetype="application/octet-stream")

    @app.get("/big")
    def big() -> Response:
        return Response(b"b" * BIG, mimetype="application/octet-stream")  # one part

    @app.get("/bigstream")
    def bigstream() -> Response:
        parts = (b"s" * 65536 for _ in range(BIG // 65536))
        return Response(parts, mimetype="application/octet-stream")

    @app.post("/slowly")
    def slowly() -> Any:
        time.sleep(0.5)
        return jsonify({"bytes": len(request.get_data())})

    @app.get("/wait")
    def wait() -> Any:
        gone = caller_gone(request.environ)
        assert gone is not None
        hung_up.append(gone.result(timeout=5) is None)
        return jsonify({})

    return app


@contextlib.contextmanager
def serve(app: Any, threads: int) -> Iterator[int]:
    """A front serving ``app`` on a free port, from a loop on a thread of its own."""
    loop = asyncio.new_event_loop()
    front = Front(app, max_body_bytes=LIMIT, threads=threads)
    connections: set[HttpConnection] = set()
    proxies = Proxies(["127.0.0.1"])
    server = loop.run_until_complete(
        loop.create_server(lambda: HttpConnection(front, connections, 5.0, proxies), "127.0.0.1", 0)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def port() -> Iterator[int]:
    with serve(echo_app(LIMIT), threads=2) as port:
        yield port


@pytest.fixture
def one_thread_port() -> Iterator[int]:
    with serve(echo_app(LIMIT), threads=1) as port:
        yield port


def exchange(port: int, *pieces: bytes, pause_s: float = 0.0) -> bytes:
    """Send ``pieces`` (a slow client: one at a time), then read the answer to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        for piece in pieces:
            client.sendall(piece)
            time.sleep(pause_s)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


def parse(answer: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def chunked(parts: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(part), part) for part in parts] + [b"0\r\n\r\n"]


CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


def test_a_chunked_body_reaches_the_app_whole_with_its_length(port: int) -> None:
    head = CHUNKED_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    status, headers, body = parse(exchange(port, head, *chunked([b"a" * 10] * 50)))
    assert status == 200
    assert json.loads(body) == {"bytes": 500, "length": 500}
    # Header names go out as the app spelled them, with one Date of the server's.
    assert headers[b"Content-Type"] == b"application/json"
    assert headers[b"X-Custom-Header"] == b"yes"
    assert b"Date" in headers and b"Server" not in headers


def test_a_chunked_body_over_the_limit_is_cut_and_refused_as_too_large(port: int) -> None:
    head = CHUNKED_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    status, _headers, _body = parse(exchange(port, head, *chunked([b"a" * 100] * 50)))
    assert status == 413  # Flask's; the API's own says it in JSON


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body(port: int) -> None:
    head = CHUNKED_HEAD + b"Content-Length: 5000\r\n\r\n"
    status, _headers, _body = parse(exchange(port, head, b"never read"))
    assert status == 413


async def front_server(front: Front) -> asyncio.Server:
    """``front`` serving on a free port of the running loop."""
    connections: set[HttpConnection] = set()
    return await asyncio.get_running_loop().create_server(
        lambda: HttpConnection(front, connections, 5.0, Proxies([])), "127.0.0.1", 0
    )


def test_a_body_larger_than_memory_buffering_is_replayed_from_disk() -> None:
    # Above BODY_IN_MEMORY_BYTES the body waits in a temporary file; the app gets every byte.
    big = 3 * 1024 * 1024
    front = Front(echo_app(big + 10), max_body_bytes=big + 10, threads=1)

    async def serve_one() -> bytes:
        server = await front_server(front)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(CHUNKED_HEAD + b"Content-Length: %d\r\n\r\n" % big)
        for _ in range(3):
            writer.write(b"x" * (1024 * 1024))
            await writer.drain()
        answer = await reader.read()
        server.close()
        return answer

    status, _headers, body = parse(asyncio.run(serve_one()))
    assert status == 200
    assert json.loads(body) == {"bytes": big, "length": big}


def test_bodies_arriving_are_held_within_the_process_s_memory_and_disk_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Slow uploads each held 1 MB of memory, or their whole size on disk, with no bound on
    # the sum: a thousand of them took 1.1 GB of memory.
    monkeypatch.setattr(http_front, "BODIES_IN_MEMORY_BYTES", 250_000)
    monkeypatch.setattr(http_front, "BODIES_ON_DISK_BYTES", 500_000)
    front = Front(echo_app(1_000_000), max_body_bytes=1_000_000, threads=1)
    seen: list[tuple[int, int]] = []

    async def scenario() -> tuple[bytes, bytes]:
        server = await front_server(front)
        address = server.sockets[0].getsockname()[:2]
        slow = []
        for n in range(1, 4):  # each sends 200 KB of its 400 KB, then waits
            reader, writer = await asyncio.open_connection(*address)
            writer.write(CHUNKED_HEAD + b"Content-Length: 400000\r\n\r\n" + b"x" * 200_000)
            await writer.drain()
            slow.append((reader, writer))
            held = n * 200_000
            await wait_until_async(
                lambda held=held: front.in_memory + front.on_disk == held, 5, "the body held"
            )
            seen.append((front.in_memory, front.on_disk))
        # A fourth is past what the disk may hold: refused, and told to retry.
        reader, writer = await asyncio.open_connection(*address)
        writer.write(CHUNKED_HEAD + b"Content-Length: 400000\r\n\r\n" + b"x" * 200_000)
        refused = await reader.read()
        writer.close()
        # A small upload still goes through, in memory.
        reader, writer = await asyncio.open_connection(*address)
        writer.write(CHUNKED_HEAD + b"Content-Length: 10\r\n\r\n0123456789")
        small = await reader.read()
        writer.close()
        for _reader, slow_writer in slow:
            slow_writer.close()
        await wait_until_async(
            lambda: front.in_memory == front.on_disk == 0, 5, "every body let go"
        )
        server.close()
        return refused, small

    refused, small = asyncio.run(scenario())
    # The first in memory, the next two on disk from their start (memory was short).
    assert seen == [(200_000, 0), (200_000, 200_000), (200_000, 400_000)]
    status, headers, body = parse(refused)
    assert (status, json.loads(body)["error"]["code"]) == (503, "uploads_busy")
    assert headers[b"Retry-After"] == b"2"
    assert parse(small)[0] == 200


def test_a_whole_body_waiting_for_a_thread_is_still_counted() -> None:
    # Bodies whole but queued behind busy threads are held all the same: counted until the
    # app is done with them, not only while they arrive.
    front = Front(echo_app(1_000_000), max_body_bytes=1_000_000, threads=1)
    seen: list[int] = []

    async def scenario() -> None:
        server = await front_server(front)
        address = server.sockets[0].getsockname()[:2]
        readers = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(*address)
            head = b"POST /slowly HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            writer.write(head + b"Content-Length: 100000\r\n\r\n" + b"x" * 100_000)
            readers.append(reader)
        await wait_until_async(lambda: front.in_memory == 200_000, 5, "both bodies held")
        await asyncio.sleep(0.2)  # the first is in the app, the second waits for its thread
        seen.append(front.in_memory)
        for reader in readers:
            await reader.read()
        await wait_until_async(lambda: front.in_memory == 0, 5, "both let go")
        server.close()

    asyncio.run(scenario())
    assert seen == [200_000]


def test_a_body_that_stalls_is_a_408_json_error(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_front, "BODY_IDLE_TIMEOUT_S", 0.05)
    head = CHUNKED_HEAD + b"Content-Length: 10\r\n\r\n"
    status, headers, body = parse(exchange(port, head, b"12345"))  # and never the rest
    assert status == 408
    assert headers[b"Connection"] == b"close"
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_the_environ_is_the_requests(port: int) -> None:
    request_head = (
        b"GET /environ/a%20b%2Fc?x=%41&y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Twice: 1\r\nX-Twice: 2\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
    )
    status, _headers, body = parse(exchange(port, request_head))
    assert status == 200
    assert json.loads(body) == {
        "PATH_INFO": "/environ/a b/c",
        "QUERY_STRING": "x=%41&y",
        "REMOTE_ADDR": "203.0.113.7",  # from a trusted proxy
        "HTTP_X_TWICE": "1,2",
        "CONTENT_LENGTH": "0",
    }


def test_a_streamed_answer_arrives_whole_in_parts(port: int) -> None:
    head = b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _headers, body = parse(exchange(port, head))
    assert status == 200
    sizes = [int(size, 16) for size in body.split(b"\r\n")[0::2] if size]
    # Chunked (no length known in advance), sent in parts while the app still writes.
    assert len(sizes) > 2 and sizes[0] >= http_front.RESPONSE_PART_BYTES and sizes[-1] == 0
    data = b"".join(body.split(b"\r\n")[1::2])
    assert data == b"".join(b"%05d" % index * 2000 for index in range(40))


@contextlib.contextmanager
def reading_nothing(port: int, path: bytes, settle_s: float) -> Iterator[socket.socket]:
    """A client with a tiny receive buffer that asks for ``path`` and reads nothing yet; once
    its answer has begun, the front's one thread answers another request all the same."""
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        time.sleep(settle_s)
        head = b"GET /environ/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert parse(exchange(port, head))[0] == 200
        yield client


def read_all(client: socket.socket) -> bytes:
    """What the client is sent until the front closes (or cuts off) the connection."""
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(1024 * 1024):
            answer += chunk
    return answer


def test_a_long_answer_to_a_client_that_reads_slowly_holds_no_thread(
    one_thread_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's only thread hands its whole answer to the event loop, which sends it as the
    # client reads: the next request needs the thread. No thread waits: no time limit.
    monkeypatch.setattr(http_front, "SEND_TIMEOUT_S", 0.1)
    with reading_nothing(one_thread_port, b"/big", settle_s=0.3) as slow:
        answer = read_all(slow)
    assert parse(answer)[2] == b"b" * BIG  # all of it, in the end


def test_a_stream_its_client_does_not_read_is_cut_off_and_frees_its_thread(
    one_thread_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A streamed answer's parts are sent from the app's thread as the client takes them: one
    # that takes nothing would hold the thread for good (nginx: send_timeout).
    monkeypatch.setattr(http_front, "SEND_TIMEOUT_S", 0.5)
    with reading_nothing(one_thread_port, b"/bigstream", settle_s=0.2) as stuck:
        received = len(read_all(stuck))
    assert 0 < received < BIG  # cut off


def test_a_malformed_request_after_an_answer_is_a_400_json_error(port: int) -> None:
    first = b"GET /environ/x HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(port, first + b"GET /environ/y HTTP/1.1\r\nNo colon here\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 400 " in answer
    status, headers, body = parse(answer[answer.find(b"HTTP/1.1 400 ") :])
    assert status == 400 and headers[b"Connection"] == b"close"
    assert json.loads(body)["error"]["code"] == "bad_request"


def error_page_after_a_part(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """A WSGI app that fails once it has yielded part of its body, and gives an error page."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"half of it"
    try:
        raise ValueError("made to fail")
    except ValueError:
        start_response("500 Internal Server Error", [], sys.exc_info())
    yield b"error page"


def test_an_app_failing_after_part_of_its_body_is_a_500_json_error() -> None:
    # PEP 3333: once a part is yielded its headers count as sent, and start_response given
    # exc_info re-raises. The front has sent nothing yet: its own 500, not half an answer.
    with serve(error_page_after_a_part, threads=1) as port:
        request_head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, _headers, body = parse(exchange(port, request_head))
    assert status == 500
    assert json.loads(body)["error"]["code"] == "internal_error"


def test_the_app_is_told_when_its_client_hangs_up(port: int) -> None:
    hung_up.clear()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)  # the app is waiting
    deadline = time.monotonic() + 5
    while not hung_up and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hung_up == [True]


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
) -> tuple[tuple[str, int] | None, str]:
    """(client, scheme) of a request from ``peer`` after the proxy rule."""
    return Proxies(allowed).apply((peer, 4000), headers)


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
