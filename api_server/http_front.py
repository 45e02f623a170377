"""The API's HTTP front: each request is read whole, asynchronously, before Flask sees it.

gunicorn runs the processes (``ApiWorker``, a gunicorn worker class of our own); in each, one
asyncio event loop reads request heads and bodies for every connection at once (``HttpConnection``:
HTTP/1.1 parsed by h11, which leaves the I/O to us), and only a complete request takes one of
the ``OCR_API_THREADS`` threads that run the Flask app (``Front``), its body in memory or, when
large, in a temporary file. A client that sends its request a few bytes at a time costs a socket
and a little memory, not a thread: this is what a buffering reverse proxy (nginx) in front of a
threaded server would give, in-process.

It also answers what never reaches Flask as JSON (a malformed request line, header or chunked
body, a chunk declared larger than a request may be, a body that stalls), drops connections
that do not finish their request head in time, closes a connection after a request framed both
by its length and as chunked, and closes after an early answer the way nginx's lingering close
does: a client that sends its whole body before it reads (Python's http.client, requests) still
reads a 413 instead of a broken pipe. Answers carry one Date and no Server header; a graceful
stop answers the requests already sent, then closes. A connection from an address in gunicorn's
``forwarded_allow_ips`` (``Proxies``) has its client and scheme taken from X-Forwarded-For and
X-Forwarded-Proto.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import os
import re
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from gunicorn.workers.base import Worker

log = logging.getLogger(__name__)

# A connection must send a complete request head within this (nginx: client_header_timeout).
REQUEST_HEAD_TIMEOUT_S = 30.0
# A body may pause this long between two reads (nginx: client_body_timeout).
BODY_IDLE_TIMEOUT_S = 30.0
# Bodies up to this size stay in memory; larger ones wait in a temporary file.
BODY_IN_MEMORY_BYTES = 1024 * 1024
# Bodies arriving on all of a process's connections together: past this many bytes in memory,
# each further one waits in its temporary file from the start; past this many on disk, another
# upload is refused with a 503 (a thousand slow uploads of 1 MB each held 1.1 GB of memory,
# and sixty of 13 MB 867 MB of disk, with no bound).
BODIES_IN_MEMORY_BYTES = 64 * 1024 * 1024
BODIES_ON_DISK_BYTES = 2 * 1024 * 1024 * 1024
# A streamed answer goes to the client in parts of about this size.
RESPONSE_PART_BYTES = 64 * 1024
# A client that takes none of its answer for this long is cut off (nginx: send_timeout).
SEND_TIMEOUT_S = 60.0
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

# Where a request's WSGI environ holds a future done when its client hangs up.
CALLER_GONE = "ocr.caller_gone"
Headers = list[tuple[bytes, bytes]]


def json_error(code: str, message: str, retry_after_s: int | None = None) -> tuple[Headers, bytes]:
    """The headers and body of an answer given before Flask runs, in the shape of every other
    error of the API; the connection closes after it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"Content-Type", b"application/json"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"),
    ]
    if retry_after_s is not None:
        headers.append((b"Retry-After", str(retry_after_s).encode()))
    return headers, body


def caller_gone(environ: dict[str, Any]) -> Future[None] | None:
    """The future done when the client of this WSGI request hangs up (None outside this
    front, e.g. Flask's test client)."""
    return environ.get(CALLER_GONE)


class Front:
    """The WSGI app as the front runs it: on ``threads`` threads, bodies up to
    ``max_body_bytes`` (a larger one reaches it cut at the limit + 1 bytes, to be refused)."""

    def __init__(self, wsgi_app: Any, *, max_body_bytes: int, threads: int):
        self.app = wsgi_app
        self.max_body_bytes = max_body_bytes
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="wsgi")
        # Bytes of the bodies arriving, on every connection (BODIES_IN_MEMORY_BYTES and
        # BODIES_ON_DISK_BYTES bound them); only the event loop's thread changes them.
        self.in_memory = 0
        self.on_disk = 0


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
    ``*`` for any), applied as uvicorn's ProxyHeadersMiddleware does: the client is the first
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

    def apply(
        self, client: tuple[str, int] | None, headers: Headers
    ) -> tuple[tuple[str, int] | None, str]:
        """(client, scheme) of a request from ``client`` with ``headers`` (names lower-case)."""
        if client is None or not self.trusts(client[0]):
            return client, "http"  # the headers of anyone else are ignored
        values = {name: value.decode("latin-1") for name, value in headers}  # the last
        scheme = values.get(b"x-forwarded-proto", "").strip()
        hops = [
            _host_port(hop.strip())
            for name, value in headers
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        untrusted = [hop for hop in reversed(hops) if not self.trusts(hop[0])]
        first = next(iter(untrusted or hops), None)
        if first is not None and first[0]:  # an empty header says nothing
            client = first
        return client, scheme if scheme in ("http", "https") else "http"


def _host_port(hop: str) -> tuple[str, int]:
    """(host, port) of an X-Forwarded-For entry: an address, ``v4:port`` or ``[v6]:port``."""
    found = re.fullmatch(r"\[([^\]]*)\](?::(\d+))?|([^:]*):(\d+)", hop)
    if found is None:
        return hop, 0
    return (found[1] or found[3] or "", int(found[2] or found[4] or 0))


class HttpConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 read by h11, each request's body gathered as it
    arrives, then the whole request run by the app on one of its threads and answered."""

    def __init__(
        self, front: Front, connections: set[HttpConnection], keepalive_s: float, proxies: Proxies
    ):
        self.front = front
        self.proxies = proxies
        self.connections = connections
        self.keepalive_s = keepalive_s
        self.loop = asyncio.get_running_loop()
        self.conn = h11.Connection(h11.SERVER)  # bounds a request head to 16 KB
        self.transport: asyncio.Transport
        self.peer: tuple[str, int] | None = None  # the connection's two ends
        self.local: tuple[str, int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.keeping_alive = False  # idle between two requests, on the keep-alive deadline
        self.chunks: ChunkSizes | None = None
        self.environ: dict[str, Any] | None = None  # of the request whose body is arriving
        self.body: tempfile.SpooledTemporaryFile[bytes] | None = None
        self.body_size = 0
        self.spooled = False  # the body waits in its temporary file
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.gone: Future[None] = Future()  # done when the client hangs up
        self.writable = asyncio.Event()
        self.writable.set()
        self.head_request = False
        self.close_after = False  # after a request framed both by its length and as chunked
        self.answer_started = False
        self.stopping = False
        self.closing = False
        self.lingered_bytes: int | None = None  # counted while lingering

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer, self.local = _address(transport, "peername"), _address(transport, "sockname")
        self.connections.add(self)
        self._set_timer(REQUEST_HEAD_TIMEOUT_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.writable.set()
        self._set_timer(None)
        self.connections.discard(self)
        if not self.gone.done():
            self.gone.set_result(None)  # a synchronous read stops what no one waits for
        if self.body is not None:
            self._count_body(-self.body_size)
            self.body.close()

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
            elif isinstance(event, h11.Data):
                self._take(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            else:
                return  # NEED_DATA

    def _start(self, request: h11.Request) -> None:
        self._set_timer(None)
        self.head_request = request.method == b"HEAD"
        self.answer_started = False
        headers = list(request.headers)  # names lower-case
        names = {name for name, _value in headers}
        chunked = b"transfer-encoding" in names  # h11 takes chunked only, and refuses others
        # Framed both ways: the body is read as chunked, then the connection is closed (RFC
        # 9112 section 6.1), so that what a front proxy took for the rest of the body is never
        # read as a request of its own.
        self.close_after = chunked and b"content-length" in names
        environ = self._environ(request, headers)
        if not chunked and int(environ.get("CONTENT_LENGTH", 0)) > self.front.max_body_bytes:
            # Flask refuses it by its Content-Length (413 in the API's error shape) without
            # reading; the body is discarded while the connection closes.
            self._answer({**environ, "wsgi.input": io.BytesIO()})
            return
        # Closed once the app has run (or when the client hangs up before).
        body = tempfile.SpooledTemporaryFile(max_size=BODY_IN_MEMORY_BYTES)  # noqa: SIM115
        self.environ, self.body, self.body_size, self.spooled = environ, body, 0, False
        if chunked:
            self.chunks = ChunkSizes(self.front.max_body_bytes)
            if self.chunks.too_large(self.conn.trailing_data[0]):
                self._refuse_chunk()
                return
        if self.conn.they_are_waiting_for_100_continue:
            self._write(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        self._set_timer(BODY_IDLE_TIMEOUT_S)

    def _environ(self, request: h11.Request, headers: Headers) -> dict[str, Any]:
        """The request's WSGI environ (PEP 3333), but for its body."""
        raw_path, _, query = request.target.partition(b"?")
        client, scheme = self.proxies.apply(self.peer, headers)
        host, port = self.local or ("localhost", 80)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode()}",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            CALLER_GONE: self.gone,
        }
        if client is not None:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
        for name, value in headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if name not in (b"content-type", b"content-length"):
                key = f"HTTP_{key}"
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ

    def _take(self, data: bytes) -> None:
        if self.body is None:
            return  # the rest of a body over the limit, answered or being answered
        part = data[: self.front.max_body_bytes + 1 - self.body_size]
        if not self._room_for(len(part)):
            self._refuse(
                503,
                "uploads_busy",
                "this API process holds as many uploads arriving as it can; retry shortly",
                retry_after_s=2,
            )
            return
        self.body.write(part)
        self.body_size += len(part)
        self._count_body(len(part))
        if self.body_size > self.front.max_body_bytes:
            self._dispatch()  # cut at the limit + 1 bytes: Flask refuses it as too large
        else:
            self._set_timer(BODY_IDLE_TIMEOUT_S)

    def _room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes of this body may be held (moved to its temporary file
        first if memory is short)."""
        front = self.front
        if not self.spooled and (
            self.body_size + size > BODY_IN_MEMORY_BYTES
            or front.in_memory + size > BODIES_IN_MEMORY_BYTES
        ):
            assert self.body is not None
            self._count_body(-self.body_size)
            self.body.rollover()
            self.spooled = True
            self._count_body(self.body_size)
        return not self.spooled or front.on_disk + size <= BODIES_ON_DISK_BYTES

    def _count_body(self, size: int, spooled: bool | None = None) -> None:
        if self.spooled if spooled is None else spooled:
            self.front.on_disk += size
        else:
            self.front.in_memory += size

    def _dispatch(self) -> None:
        """The body is whole, or over the limit: the app gets the request, and Flask sees the
        body's length, never a chunked stream."""
        if self.environ is None or self.body is None:
            return
        environ, body = self.environ, self.body
        self.environ, self.body = None, None
        body.seek(0)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        # Counted until the app is done with it: a body whole may still wait for a thread.
        held = (self.body_size, self.spooled)
        self._answer({**environ, "CONTENT_LENGTH": str(self.body_size), "wsgi.input": body}, held)

    def _answer(self, environ: dict[str, Any], held: tuple[int, bool] = (0, False)) -> None:
        self._set_timer(None)
        # Held: the loop holds tasks weakly.
        self.task = self.loop.create_task(self._run(environ, held))

    async def _run(self, environ: dict[str, Any], held: tuple[int, bool]) -> None:
        try:
            status, headers, rest = await self.loop.run_in_executor(
                self.front.pool, self._call_app, environ
            )
            await self._send(status, headers, rest, more=False)
        except Exception:
            log.exception("the HTTP front failed on a request")
            self._refuse(500, "internal_error", "the server failed on this request")
            return
        finally:
            environ["wsgi.input"].close()
            self._count_body(-held[0], held[1])
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

    def _call_app(self, environ: dict[str, Any]) -> tuple[int, Headers, bytes]:
        """On one of the app's threads: run it; (status, headers, the end of the body). A long
        answer's earlier parts are sent from here, each once the client has room for it."""
        answer: list[Any] = []
        parts: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None and (self.answer_started or any(parts)):
                raise exc_info[1].with_traceback(exc_info[2])
            encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
            answer[:] = [int(status[:3]), encoded]
            return parts.append

        result = self.front.app(environ, start_response)
        held = 0  # bytes in parts
        try:
            for part in result:
                if self.closing:
                    break  # the client is gone: the rest is made for no one
                # Sent from here only once another part follows: the last goes from the loop.
                if held >= RESPONSE_PART_BYTES:
                    sent = self._send(answer[0], answer[1], b"".join(parts), more=True)
                    asyncio.run_coroutine_threadsafe(sent, self.loop).result()
                    parts.clear()
                    held = 0
                parts.append(part)
                held += len(part)
        finally:
            if hasattr(result, "close"):
                result.close()
        return answer[0], answer[1], b"".join(parts)

    async def _send(self, status: int, headers: Headers, data: bytes, *, more: bool) -> None:
        if self.closing:
            return
        if not self.answer_started:
            self.answer_started = True
            # The server dates every answer itself: a Date of the app's would be a second.
            headers = [(n, v) for n, v in headers if n.lower() != b"date"]
            headers.append((b"Date", formatdate(usegmt=True).encode()))
            if self.stopping or self.close_after:
                headers = _with_close(headers)
            self._write(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        if data and not self.head_request:
            self._write(h11.Data(data=data))
        if not more:
            self._write(h11.EndOfMessage())
            await self.writable.wait()  # an answer's last part: no thread waits for it
            return
        try:  # a part of a stream, whose thread waits: within SEND_TIMEOUT_S
            await asyncio.wait_for(self.writable.wait(), SEND_TIMEOUT_S)
        except TimeoutError:
            self.closing = True
            self.transport.abort()

    def _write(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.transport.write(data)

    def _refuse_chunk(self) -> None:
        # Rather than wait for bytes that would be refused anyway: no body within the limit is.
        self._refuse(
            400,
            "bad_request",
            f"a chunk of the request body is declared larger than the {self.front.max_body_bytes}"
            " bytes a request may have; nothing was stored",
        )

    def _refuse(
        self, status: int, code: str, message: str, retry_after_s: int | None = None
    ) -> None:
        """Answer in the API's JSON before (or instead of) the app, then close."""
        if self.closing:
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers, body = json_error(code, message, retry_after_s)
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
        self.timer = None if seconds is None else self.loop.call_later(seconds, self._on_timer)

    def _on_timer(self) -> None:
        if self.conn.their_state is h11.IDLE:  # still no complete request head
            self._close()
        elif self.environ is not None:
            self._refuse(
                408,
                "request_timeout",
                f"the request body stalled for {BODY_IDLE_TIMEOUT_S:g} s; send it again",
            )

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


def _address(transport: asyncio.BaseTransport, name: str) -> tuple[str, int] | None:
    address = transport.get_extra_info(name)  # (host, port, ...) for IPv6
    return (address[0], address[1]) if isinstance(address, tuple) else None


def _with_close(headers: Headers) -> Headers:
    kept = [(name, value) for name, value in headers if name.lower() != b"connection"]
    return [*kept, (b"Connection", b"close")]


class ApiWorker(Worker):
    """gunicorn worker: one asyncio event loop serving ``HttpConnection`` on gunicorn's
    sockets, the app (``Front``) running Flask on its threads."""

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
