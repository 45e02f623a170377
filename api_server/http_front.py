"""The API's HTTP front: each request is read whole, asynchronously, before Flask sees it.

gunicorn runs the processes (``ApiWorker``, a gunicorn worker class of our own); in each, one
asyncio event loop reads request heads and bodies for every connection at once (``HttpConnection``:
HTTP/1.1 parsed by h11, which leaves the I/O to us), and only a complete request takes one of
the ``OCR_API_THREADS`` threads that run the Flask app (``BufferedWsgi``, through a2wsgi). A
client that sends its request a few bytes at a time costs a socket and a little memory, not a
thread: this is what a buffering reverse proxy (nginx) in front of a threaded server would
give, in-process.

It also answers what never reaches Flask as JSON (a malformed request line, header or chunked
body, a chunk declared larger than a request may be, a body that stalls), drops connections
that do not finish their request head in time, closes a connection after a request framed both
by its length and as chunked, and closes after an early answer the way nginx's lingering close
does: a client that sends its whole body before it reads (Python's http.client, requests) still
reads a 413 instead of a broken pipe. Answers carry one Date and no Server header; a graceful
stop answers the requests already sent, then closes. A connection from an address in gunicorn's
``forwarded_allow_ips`` (``Proxies``) has its client and scheme taken from X-Forwarded-For and
X-Forwarded-Proto, as uvicorn's worker did.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import tempfile
from collections import deque
from concurrent.futures import Future
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11
from a2wsgi import WSGIMiddleware
from gunicorn.workers.base import Worker

log = logging.getLogger(__name__)

# A connection must send a complete request head within this (nginx: client_header_timeout).
REQUEST_HEAD_TIMEOUT_S = 30.0
# A body may pause this long between two reads (nginx: client_body_timeout).
BODY_IDLE_TIMEOUT_S = 30.0
# Bodies up to this size stay in memory; larger ones wait in a temporary file.
BODY_IN_MEMORY_BYTES = 1024 * 1024
BODY_REPLAY_CHUNK = 256 * 1024
# Body bytes received ahead of the app before the connection stops reading (flow control).
BODY_BUFFER_BYTES = 64 * 1024
# h11 takes a chunk size of up to 20 hex digits; a longer size line is refused by it.
CHUNK_LINE_MAX_BYTES = 1024
# After answering before the body was read: discard what the client still sends, for at most
# this long and this much (nginx: lingering_time), then close.
LINGER_S = 10.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
# On a graceful stop, a connection with no request under way gets this long to deliver one
# (it may be in the socket's buffer, not yet read by the busy event loop), then closes.
STOP_IDLE_S = 1.0
# The worker tells gunicorn's master it is alive this often (gunicorn's timeout is 30 s).
HEARTBEAT_S = 1.0

ASGIMessage = dict[str, Any]
# Where a request's scope records the response header names as Flask spelled them.
HEADER_NAMES = "ocr.header_names"
# Where a request's scope holds a future done when its client hangs up (see caller_gone).
CALLER_GONE = "ocr.caller_gone"


def json_error(code: str, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of an answer given before Flask runs, in the shape of every other
    error of the API; the connection closes after it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"Content-Type", b"application/json"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"),
    ]
    return headers, body


class BufferedWsgi:
    """ASGI app: buffers each request body (up to ``max_body_bytes`` + 1), then runs the WSGI
    app on a thread with the whole body in hand."""

    def __init__(self, wsgi_app: Any, *, max_body_bytes: int, threads: int):
        # Read by the protocol too: a chunk declared larger than this is refused at once.
        self.max_body_bytes = max_body_bytes
        # Typed loosely: the scopes and messages here are plain dicts.
        self._wsgi: Any = WSGIMiddleware(_recording_header_names(wsgi_app), workers=threads)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._wsgi(scope, receive, send)  # lifespan: a2wsgi acknowledges it
            return
        if _framed_twice(scope):
            # Content-Length and Transfer-Encoding both: the body is read as chunked, then the
            # connection is closed (RFC 9112 section 6.1), so that what a front proxy took
            # for the rest of the body is never read as a request of its own.
            send = _closing(send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            # Flask refuses it by its Content-Length (413 in the API's error shape) without
            # reading; the protocol then discards the body while it closes.
            await self._run({**scope}, _empty_body, send)
            return
        with tempfile.SpooledTemporaryFile(max_size=BODY_IN_MEMORY_BYTES) as body:
            size = await self._read_body(receive, send, body)
            if size is None:
                return
            body.seek(0)
            # The body is whole: Flask sees its length, never a chunked stream. A chunked body
            # over the limit arrives cut at limit + 1 bytes, which Flask refuses as too large.
            headers = [
                (name, value)
                for name, value in scope["headers"]
                if name not in (b"content-length", b"transfer-encoding")
            ]
            headers.append((b"content-length", str(size).encode()))
            # The body is read: the connection says nothing more until the client hangs up,
            # which a synchronous read listens for (it stops what no one waits for).
            gone: Future[None] = Future()
            watching = asyncio.create_task(_watch_disconnect(receive, gone))
            try:
                await self._run(
                    {**scope, "headers": headers, CALLER_GONE: gone}, _replay(body), send
                )
            finally:
                watching.cancel()

    async def _run(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the WSGI app; its response headers go out spelled as Flask spelled them (a2wsgi
        lower-cases them; clients of the original API read "Content-Type" as sent before)."""

        async def send_as_spelled(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                names: dict[bytes, bytes] = scope.get(HEADER_NAMES, {})
                # The server dates every answer itself: a Date of the app's would be a second.
                headers = [
                    (names.get(name, name), value)
                    for name, value in message["headers"]
                    if name.lower() != b"date"
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self._wsgi(scope, receive, send_as_spelled)

    async def _read_body(self, receive: Any, send: Any, body: Any) -> int | None:
        """Read the body into ``body``; its size, or None when there is nothing to answer."""
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_TIMEOUT_S)
            except TimeoutError:
                headers, answer = json_error(
                    "request_timeout",
                    f"the request body stalled for {BODY_IDLE_TIMEOUT_S:g} s; send it again",
                )
                await send({"type": "http.response.start", "status": 408, "headers": headers})
                await send({"type": "http.response.body", "body": answer})
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            room = self.max_body_bytes + 1 - size
            body.write(chunk[:room])
            size += min(len(chunk), room)
            if size > self.max_body_bytes or not message.get("more_body", False):
                return size


async def _watch_disconnect(receive: Any, gone: Future[None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the rest of a body over the limit, which Flask refuses
    if not gone.done():
        gone.set_result(None)


def caller_gone(environ: dict[str, Any]) -> Future[None] | None:
    """The future done when the client of this WSGI request hangs up (None outside this
    front, e.g. Flask's test client)."""
    scope = environ.get("asgi.scope")
    return scope.get(CALLER_GONE) if isinstance(scope, dict) else None


def _recording_header_names(app: Any) -> Any:
    """The WSGI app, recording in its ASGI scope how it spells each response header name."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        names = environ["asgi.scope"].setdefault(HEADER_NAMES, {})

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            names.update(
                (name.lower().encode("latin-1"), name.encode("latin-1")) for name, _ in headers
            )
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wsgi


async def _empty_body() -> ASGIMessage:
    return {"type": "http.request", "body": b"", "more_body": False}


def _replay(body: Any) -> Any:
    async def receive() -> ASGIMessage:
        chunk = body.read(BODY_REPLAY_CHUNK)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    return receive


def _framed_twice(scope: dict[str, Any]) -> bool:
    names = {name for name, _value in scope["headers"]}
    return b"content-length" in names and b"transfer-encoding" in names


def _closing(send: Any) -> Any:
    """``send``, its answer saying ``Connection: close`` (after which h11 closes)."""

    async def send_then_close(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": _with_close(message["headers"])}
        await send(message)

    return send_then_close


def _with_close(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name.lower() != b"connection"]
    return [*kept, (b"Connection", b"close")]


def _content_length(scope: dict[str, Any]) -> int | None:
    """The declared length; None when there is none or a Transfer-Encoding overrides it."""
    if _framed_twice(scope):
        return None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ChunkSizes:
    """Follows a chunked body's framing to tell whether a chunk declared larger than ``limit``
    begins: h11 parses the framing but tells chunk sizes through no public interface.

    h11 still validates every byte; this reads only the size lines, and stops at the last
    chunk or at anything h11 will refuse anyway."""

    def __init__(self, limit: int):
        self.limit = limit
        self.line = bytearray()
        self.skip = 0  # bytes of chunk data (and its CRLF) still to come
        self.done = False

    def too_large(self, data: bytes) -> bool:
        at = 0
        while at < len(data) and not self.done:
            if self.skip:
                step = min(self.skip, len(data) - at)
                self.skip -= step
                at += step
                continue
            end = data.find(b"\n", at)
            self.line += data[at : len(data) if end < 0 else end]
            if end < 0:
                self.done = len(self.line) > CHUNK_LINE_MAX_BYTES
                return False
            at = end + 1
            size = bytes(self.line).split(b";")[0].strip()
            self.line.clear()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,20}", size) or int(size, 16) == 0:
                self.done = True  # malformed (h11 answers it) or the last chunk
            elif int(size, 16) > self.limit:
                return True
            else:
                self.skip = int(size, 16) + 2
        return False


class Proxies:
    """The addresses trusted to say whom and how they forward (gunicorn's forwarded_allow_ips,
    ``*`` for any), applied as uvicorn's ProxyHeadersMiddleware did: the client is the first
    X-Forwarded-For entry from the right that is not trusted itself (the first entry if all
    are, or for ``*``), the scheme X-Forwarded-Proto's http or https."""

    def __init__(self, allowed: list[str]):
        self.any = "*" in allowed
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allowed if a != "*"]

    def trusts(self, host: str) -> bool:
        try:
            return self.any or any(ipaddress.ip_address(host) in net for net in self.networks)
        except ValueError:  # not an IP address
            return False

    def apply(self, scope: dict[str, Any]) -> None:
        if scope["client"] is None or not self.trusts(scope["client"][0]):
            return  # the headers of anyone else are ignored
        values = {name: value.decode("latin-1") for name, value in scope["headers"]}  # the last
        if (scheme := values.get(b"x-forwarded-proto", "").strip()) in ("http", "https"):
            scope["scheme"] = scheme
        hops = [
            _host_port(hop.strip())
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        untrusted = [hop for hop in reversed(hops) if not self.trusts(hop[0])]
        client = next(iter(untrusted or hops), None)
        if client is not None and client[0]:  # an empty header says nothing
            scope["client"] = client


def _host_port(hop: str) -> tuple[str, int]:
    """(host, port) of an X-Forwarded-For entry: an address, ``v4:port`` or ``[v6]:port``."""
    found = re.fullmatch(r"\[([^\]]*)\](?::(\d+))?|([^:]*):(\d+)", hop)
    if found is None:
        return hop, 0
    return (found[1] or found[3] or "", int(found[2] or found[4] or 0))


class HttpConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 read by h11, each request handed to the ASGI app once
    its head is complete, its body passed on as it arrives."""

    def __init__(
        self,
        app: BufferedWsgi,
        connections: set[HttpConnection],
        keepalive_s: float,
        proxies: Proxies,
    ):
        self.app = app
        self.proxies = proxies
        self.connections = connections
        self.keepalive_s = keepalive_s
        self.loop = asyncio.get_running_loop()
        self.conn = h11.Connection(h11.SERVER)  # bounds a request head to 16 KB
        self.transport: asyncio.Transport
        self.timer: asyncio.TimerHandle | None = None
        self.keeping_alive = False  # idle between two requests, on the keep-alive deadline
        self.chunks: ChunkSizes | None = None
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.body: deque[bytes] = deque()  # what the app has yet to receive
        self.body_bytes = 0
        self.more_body = False
        self.arrived = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.head_request = False
        self.stopping = False
        self.closing = False
        self.lingered_bytes: int | None = None  # counted while lingering

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connections.add(self)
        self._set_timer(REQUEST_HEAD_TIMEOUT_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.arrived.set()  # the app's receive says the client is gone
        self.writable.set()
        self._set_timer(None)
        self.connections.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.lingered_bytes is not None:
            self.lingered_bytes += len(data)
            if self.lingered_bytes > LINGER_MAX_BYTES:
                self.transport.close()
            return
        if self.keeping_alive:
            self.keeping_alive = False
            self._set_timer(REQUEST_HEAD_TIMEOUT_S)  # a next request head has begun
        if self.chunks is not None and self.chunks.too_large(data):
            self._refuse_chunk()
            return
        self.conn.receive_data(data)
        self._read_events()

    def _read_events(self) -> None:
        while not self.closing:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                log.info("malformed request: %s", exc)
                self._refuse(
                    400,
                    "bad_request",
                    "the request is not valid HTTP/1.1 (its request line, headers or chunked "
                    "body are malformed); nothing was stored",
                )
                return
            if event is h11.PAUSED:  # a next request, before this one is answered
                self.transport.pause_reading()
                return
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data | h11.EndOfMessage):
                data = event.data if isinstance(event, h11.Data) else b""
                self.more_body = isinstance(event, h11.Data)
                self.body.append(data)
                self.body_bytes += len(data)
                if self.body_bytes > BODY_BUFFER_BYTES:
                    self.transport.pause_reading()  # until the app has read it
                self.arrived.set()
            else:
                return  # NEED_DATA

    def _start(self, request: h11.Request) -> None:
        self._set_timer(None)
        self.head_request = request.method == b"HEAD"
        self.body.clear()  # what the last app left unread (the rest of a body over the limit)
        self.body_bytes = 0
        self.more_body = True
        headers = [(name.lower(), value) for name, value in request.headers]
        if (b"transfer-encoding", b"chunked") in headers:
            self.chunks = ChunkSizes(self.app.max_body_bytes)
            if self.chunks.too_large(self.conn.trailing_data[0]):
                self._refuse_chunk()
                return
        raw_path, _, query = request.target.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode(),
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self._address("peername"),
            "server": self._address("sockname"),
        }
        self.proxies.apply(scope)
        self.task = self.loop.create_task(self._run(scope))  # held: the loop holds tasks weakly

    def _address(self, name: str) -> tuple[str, int] | None:
        address = self.transport.get_extra_info(name)  # (host, port, ...) for IPv6
        return (address[0], address[1]) if isinstance(address, tuple) else None

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except Exception:
            log.exception("the HTTP front failed on a request")
            self._refuse(500, "internal_error", "the server failed on this request")
            return
        if self.closing:
            return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            if self.stopping:
                self._close()
                return
            self.conn.start_next_cycle()
            self.chunks = None
            self.keeping_alive = not self.conn.trailing_data[0]
            self._set_timer(self.keepalive_s if self.keeping_alive else REQUEST_HEAD_TIMEOUT_S)
            self.transport.resume_reading()
            self._read_events()  # a next request already received
        else:
            self._close()  # "Connection: close", or answered before the body was read

    async def _receive(self) -> ASGIMessage:
        if self.conn.they_are_waiting_for_100_continue and not self.closing:
            self._write(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        while not self.body and not self.closing:
            self.arrived.clear()
            await self.arrived.wait()
        if not self.body:
            return {"type": "http.disconnect"}
        data = self.body.popleft()
        self.body_bytes -= len(data)
        if not self.body:
            self.transport.resume_reading()
        more = self.more_body or bool(self.body)
        return {"type": "http.request", "body": data, "more_body": more}

    async def _send(self, message: ASGIMessage) -> None:
        if self.closing:
            return
        if message["type"] == "http.response.start":
            headers = [*message["headers"], (b"Date", formatdate(usegmt=True).encode())]
            status = message["status"]
            self._write(
                h11.Response(
                    status_code=status,
                    headers=_with_close(headers) if self.stopping else headers,
                    reason=_reason(status),
                )
            )
        else:
            if message.get("body") and not self.head_request:
                self._write(h11.Data(data=message["body"]))
            if not message.get("more_body", False):
                self._write(h11.EndOfMessage())
        await self.writable.wait()

    def _write(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.transport.write(data)

    def _refuse_chunk(self) -> None:
        # Rather than wait for bytes that would be refused anyway: no body within the limit is.
        self._refuse(
            400,
            "bad_request",
            f"a chunk of the request body is declared larger than the {self.app.max_body_bytes} "
            "bytes a request may have; nothing was stored",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the API's JSON before (or instead of) the app, then close."""
        if self.closing:
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers, body = json_error(code, message)
            headers.append((b"Date", formatdate(usegmt=True).encode()))
            head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            status_line = b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))
            self.transport.write(status_line + head + b"\r\n" + body)
        self._close()

    def _close(self) -> None:
        """Close; or, while the client is still sending a body, stop writing, discard what it
        sends for up to LINGER_S, then close (a plain close would reset the connection and the
        client would lose the answer)."""
        self.closing = True
        self.arrived.set()
        self._set_timer(None)
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            self.transport.close()
            return
        self.lingered_bytes = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _set_timer(self, seconds: float | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if seconds is None else self.loop.call_later(seconds, self._on_idle)

    def _on_idle(self) -> None:
        # Still no complete request head (h11 moves past IDLE once it has one).
        if self.conn.their_state is h11.IDLE:
            self._close()

    def shutdown(self) -> None:
        """Graceful stop: finish the request under way, or one that is arriving, then close.

        A request whose bytes are still in the socket buffer was sent before the stop and must
        be answered (as gunicorn's threaded worker did), so an idle connection gets STOP_IDLE_S
        to deliver it.
        """
        self.stopping = True
        self.keeping_alive = False
        if self.conn.their_state is h11.IDLE:
            self._set_timer(STOP_IDLE_S)


class ApiWorker(Worker):
    """gunicorn worker: one asyncio event loop serving ``HttpConnection`` on gunicorn's
    sockets, the app (``BufferedWsgi``) running Flask on its threads."""

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        connections: set[HttpConnection] = set()
        proxies = Proxies(self.cfg.forwarded_allow_ips)
        servers = [
            await loop.create_server(
                lambda: HttpConnection(self.wsgi, connections, self.cfg.keepalive, proxies),
                sock=listener.sock,
            )
            for listener in self.sockets
        ]
        # Signals (gunicorn's handlers) only set self.alive; the heartbeat loop notices.
        while self.alive and self.ppid == os.getppid():
            self.notify()
            await asyncio.sleep(HEARTBEAT_S)
        for server in servers:
            server.close()
        for connection in list(connections):
            connection.shutdown()
        deadline = loop.time() + self.cfg.graceful_timeout
        while connections and loop.time() < deadline:
            self.notify()
            await asyncio.sleep(0.1)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
