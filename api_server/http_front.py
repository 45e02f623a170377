"""The API's HTTP front: each request is read whole, asynchronously, before Flask sees it.

gunicorn runs the processes (``ApiWorker``: uvicorn's asyncio worker); in each, one event loop
reads request heads and bodies for every connection at once, and only a complete request takes
one of the ``OCR_API_THREADS`` threads that run the Flask app (through a2wsgi). A client that
sends its request a few bytes at a time costs a socket and a little memory, not a thread: this
is what a buffering reverse proxy (nginx) in front of a threaded server would give, in-process.

It also answers what never reaches Flask as JSON (a malformed request line, header or chunked
body, a chunk declared larger than a request may be), drops connections that do not finish
their request head in time, closes a connection after a request framed both by its length and
as chunked, and closes after an early answer the way nginx's lingering close does: a client
that sends its whole body before it reads (Python's http.client, requests) still reads a 413
instead of a broken pipe.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from concurrent.futures import Future
from typing import Any

import h11
from a2wsgi import WSGIMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

# A connection must send a complete request head within this (nginx: client_header_timeout).
REQUEST_HEAD_TIMEOUT_S = 30.0
# A body may pause this long between two reads (nginx: client_body_timeout).
BODY_IDLE_TIMEOUT_S = 30.0
# Bodies up to this size stay in memory; larger ones wait in a temporary file.
BODY_IN_MEMORY_BYTES = 1024 * 1024
BODY_REPLAY_CHUNK = 256 * 1024
# After answering before the body was read: discard what the client still sends, for at most
# this long and this much (nginx: lingering_time), then close.
LINGER_S = 10.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
# On a graceful stop, a connection with no request under way gets this long to deliver one
# (it may be in the socket's buffer, not yet read by the busy event loop), then closes.
STOP_IDLE_S = 1.0

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
            headers = [(n, v) for n, v in message["headers"] if n.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"Connection", b"close")]}
        await send(message)

    return send_then_close


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


class _LingeringTransport:
    """The connection's transport, whose ``close`` lingers while the client is still sending
    the body of a request that was answered early."""

    def __init__(self, transport: asyncio.Transport, protocol: ApiH11Protocol):
        self._transport = transport
        self._protocol = protocol
        self._closing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._protocol.close_lingering(self._transport)


class ApiH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11, whose parser bounds a request head to 16 KB), with
    JSON errors, a deadline for the request head and a lingering close."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._lingering = False
        self._lingered_bytes = 0
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(REQUEST_HEAD_TIMEOUT_S, self._head_timeout)

    def _head_timeout(self) -> None:
        # Still no complete request head (h11 moves past IDLE once it has one).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """Graceful stop: finish the request under way, or one that is arriving, then close.

        uvicorn closes a connection at once when no request is under way; but a request whose
        bytes are still in the socket buffer was sent before the stop and must be answered (as
        gunicorn's threaded worker did), so an idle connection gets STOP_IDLE_S to deliver it.
        """
        self._stopping = True
        if self._idle():
            self.loop.call_later(STOP_IDLE_S, self._close_if_idle)
        else:
            super().shutdown()

    def _idle(self) -> bool:
        no_request = self.cycle is None or self.cycle.response_complete
        return no_request and self.conn.their_state is h11.IDLE

    def _close_if_idle(self) -> None:
        if self._idle() and not self.transport.is_closing():
            super().shutdown()

    def handle_events(self) -> None:
        super().handle_events()
        if self._stopping and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answered, then closed

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered_bytes += len(data)
            if self._lingered_bytes > LINGER_MAX_BYTES:
                self._real_transport().close()
            return
        cycle = self.cycle
        buffered = len(cycle.body) if cycle is not None else 0
        super().data_received(data)
        if self.cycle is not None:
            # Body bytes h11 took from these bytes (uvicorn keeps them until the app reads).
            read = len(self.cycle.body) - (buffered if self.cycle is cycle else 0)
            self._refuse_chunk_over_limit(read)

    def _refuse_chunk_over_limit(self, read: int) -> None:
        """A chunk declared larger than the request limit is a 400 at once, rather than a wait
        for bytes that would be refused anyway (h11 takes chunk sizes of up to 20 digits).

        A chunk whose header came in these bytes is at most ``read`` plus what is left of it;
        if that passes the limit, so does the body: no body within the limit is refused.
        """
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        limit = getattr(self.config.app, "max_body_bytes", None)
        # A debt: h11 tells a chunk's size to no public interface; its reader keeps the bytes
        # of the chunk still to come. Read defensively, so an h11 without it checks nothing.
        left = getattr(getattr(self.conn, "_reader", None), "_bytes_in_chunk", 0)
        if isinstance(limit, int) and isinstance(left, int) and left and left + read > limit:
            self._send_bad_request(
                f"a chunk of the request body is declared larger than the {limit} bytes a "
                "request may have; nothing was stored"
            )

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._lingering:
            self._real_transport().close()
        return None

    def _real_transport(self) -> asyncio.Transport:
        transport = self.transport
        return transport._transport if isinstance(transport, _LingeringTransport) else transport

    def close_lingering(self, transport: asyncio.Transport) -> None:
        """Close now, or, while the client is still sending a body, stop writing, discard what
        it sends for up to LINGER_S, then close (a plain close would reset the connection and
        the client would lose the answer)."""
        if self.conn.their_state is not h11.SEND_BODY or transport.is_closing():
            transport.close()
            return
        self._lingering = True
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_S, transport.close)

    def send_400_response(self, msg: str) -> None:
        # A malformed request line, header or chunked body: the API's JSON, not plain text.
        self.logger.info("malformed request: %s", msg)
        self._send_bad_request(
            "the request is not valid HTTP/1.1 (its request line, headers or chunked body are "
            "malformed); nothing was stored",
        )

    def _send_bad_request(self, message: str) -> None:
        headers, body = json_error("bad_request", message)
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body)
        self.transport.close()


class ApiWorker(UvicornWorker):
    """gunicorn worker: uvicorn's asyncio server with the protocol above, no Server header."""

    CONFIG_KWARGS = {
        "loop": "asyncio",
        "http": ApiH11Protocol,
        "lifespan": "off",
        "server_header": False,
    }
