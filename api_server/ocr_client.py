"""The API server's link to the OCR server: synchronous OCR and fire-and-forget notifies (httpx,
one client per process; a request's calls on threads of their own, in parallel)."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple, Protocol

import httpx

from ocr_common.errors import CallerGone, OcrError, SyncTimeout, Unavailable
from ocr_common.observability import REQUEST_ID_HEADER, current_request_id
from ocr_common.options import OcrOptions
from ocr_common.settings import Settings
from ocr_common.webhooks import logged_url
from ocr_common.wire import (
    INTERNAL_TOKEN_HEADER,
    NOTIFY_PATH,
    OCR_PATH,
    RETRY_AFTER_S,
    TIME_LEFT_HEADER,
    Reading,
    error_from_wire,
)

log = logging.getLogger(__name__)
# httpx logs each call at INFO: a second line beside the request's own access line, without
# its request id, and with OCR_SERVER_URL as given, a password in it included. What matters of
# a call is logged here.
logging.getLogger("httpx").setLevel(logging.WARNING)

# The statuses the OCR server's POST /ocr answers a document with besides 200 (with its JSON
# error), and those that say the two services are set up apart, with what to set.
OCR_SERVER_ERRORS = frozenset({400, 413, 422, 503})
MISCONFIGURED = {
    401: "OCR_INTERNAL_TOKEN differs between the API and the OCR server (or one lacks it)",
    421: "the host of the API's OCR_SERVER_URL is not in the OCR server's OCR_ALLOWED_HOSTS",
}

CONNECT_TIMEOUT_S = 2.0
NOTIFY_TIMEOUT_S = 2.0
# Share of an API process's threads that may wait for the OCR server at once (/image-sync,
# /v1/ocr): a stalled OCR server holds each for up to OCR_SYNC_TIMEOUT_S, and the other
# threads must stay free for everything else.
SYNC_WAIT_SHARE = 0.5
# How much longer than the time left the API waits for the OCR server's answer, which says
# sync_timeout when the time is up.
ANSWER_GRACE_S = 2.0
SYNC_TIMEOUT_MESSAGE = (
    "the document was not read in the time a synchronous read may take (OCR_SYNC_TIMEOUT_S, "
    "waiting for a free engine included): queue it with POST /v1/jobs (or POST /image) and poll"
)


class OcrRequest(NamedTuple):
    """A document to read now, its options, and how many pages they select."""

    document: bytes
    options: OcrOptions
    pages: int


class OcrBackend(Protocol):
    """What the API needs of the OCR server (a fake in unit tests)."""

    def recognize(
        self, requests: list[OcrRequest], *, deadline: float, gone: Future[None] | None = None
    ) -> list[Reading | OcrError]: ...

    def notify(self) -> None: ...

    def warm_up(self) -> None: ...


class OcrServerClient:
    """HTTP client of the OCR server's internal API."""

    def __init__(self, settings: Settings):
        self._base = settings.server_url
        self._shown = logged_url(settings.server_url)
        token = settings.internal_token_value
        self._headers = {INTERNAL_TOKEN_HEADER: token} if token else {}
        self._parallel = settings.workers
        self._client: httpx.Client | None = None
        self._notifier: ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        # A notify waits to go (one thread sends them, one at a time).
        self._notify_queued = False
        self._sync_waits = threading.BoundedSemaphore(
            max(1, int(settings.api_threads * SYNC_WAIT_SHARE))
        )

    @contextlib.contextmanager
    def _sync_wait(self) -> Iterator[None]:
        """Hold one of the process's synchronous waits, or answer 503 at once when all are taken."""
        if not self._sync_waits.acquire(blocking=False):
            raise _unavailable(
                "every synchronous OCR slot of this API process is waiting for the OCR server; "
                "retry shortly, or use POST /image (or /v1/jobs) and poll",
                code="ocr_busy",
            )
        try:
            yield
        finally:
            self._sync_waits.release()

    def warm_up(self) -> None:
        """Build this process's client now rather than on its first call."""
        self._http()

    def _http(self) -> httpx.Client:
        # gunicorn forks workers after the app may have been built: a client belongs to a process.
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # No keep-alive: each call has a connection of its own, which is cut when
                # nobody waits for its answer any more (see _Connection).
                self._client = httpx.Client(
                    base_url=self._base,
                    headers=self._headers,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                )
                self._notifier = ThreadPoolExecutor(1, thread_name_prefix="ocr-notify")
                self._pid, self._notify_queued = os.getpid(), False
            return self._client

    def recognize(
        self, requests: list[OcrRequest], *, deadline: float, gone: Future[None] | None = None
    ) -> list[Reading | OcrError]:
        """The reading of each document from the OCR server's POST /ocr, in order, or the error
        it met (the OCR server down or saturated is raised), stopped at ``deadline``
        (``time.monotonic()``), or when ``gone`` is done (the caller hung up: CallerGone)."""
        # The id goes by hand: the calls run on threads of their own.
        request_id = current_request_id()
        headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
        connections = [_Connection() for _ in requests]
        # One request's documents must not fill the OCR server's wait list by themselves:
        # as many at a time as it has engines.
        calls = ThreadPoolExecutor(max(1, min(self._parallel, len(requests))), "ocr-call")
        with self._sync_wait():
            try:
                # Each on a copy of this context: their log lines carry the request's id.
                futures = [
                    calls.submit(
                        contextvars.copy_context().run,
                        self._read,
                        request,
                        deadline,
                        headers,
                        connection,
                    )
                    for request, connection in zip(requests, connections, strict=True)
                ]
                return _results(futures, deadline, gone)
            finally:
                # Whatever is still under way is dropped: its connection closes, which stops
                # the read there.
                calls.shutdown(wait=False, cancel_futures=True)
                for connection in connections:
                    connection.cut()

    def _read(
        self, request: OcrRequest, deadline: float, headers: dict[str, str], conn: _Connection
    ) -> Reading:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            raise SyncTimeout(SYNC_TIMEOUT_MESSAGE)
        # Options travel in the body: a long char_whitelist would not fit a request line.
        body = {
            "document": base64.b64encode(request.document).decode(),
            "options": request.options.to_values(),
        }
        # The OCR server stops at the time left; the grace lets its answer come.
        answer = self._call(
            OCR_PATH,
            left_s + ANSWER_GRACE_S,
            json=body,
            headers={**headers, TIME_LEFT_HEADER: f"{left_s:.3f}"},
            extensions={"trace": conn.trace},
        )
        return Reading.from_wire(answer)

    def _call(self, path: str, timeout_s: float, **kwargs: Any) -> Any:
        """The OCR server's JSON answer to a POST; any other answer is raised as its error."""
        timeout = httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S)
        try:
            response = self._http().post(path, timeout=timeout, **kwargs)
        except httpx.TransportError as exc:
            # Where it is stays in the log: a client learns nothing of the inside.
            log.warning("the OCR server at %s is not answering: %r", self._shown, exc)
            raise _unavailable(
                f"the OCR server is not answering ({type(exc).__name__}); retry shortly"
            ) from None
        status = response.status_code
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if status == 200 and isinstance(answer, dict):
            return answer
        if status in OCR_SERVER_ERRORS and _is_error_body(answer):
            raise error_from_wire(status, answer, response.headers.get("Retry-After"))
        # Not one of the OCR server's own answers: its body is not passed on (it may be anyone's
        # page, even one that echoes the request's headers, the internal token among them).
        if status in (502, 503, 504):
            # A proxy in between, telling that the OCR server behind it is down.
            log.warning("the OCR server at %s: a proxy answered %d", self._shown, status)
            raise _unavailable(f"the OCR server is not answering ({status}); retry shortly")
        # The two services' settings disagree: an operator's to fix, not a client's.
        why = MISCONFIGURED.get(status, "OCR_SERVER_URL does not lead to the OCR server's API")
        log.error("the OCR server at %s refused the API (%d): %s", self._shown, status, why)
        raise _unavailable(
            "the API server cannot use its OCR server (their settings disagree; its "
            "operator is told in its log); nothing was stored"
        )

    def notify(self) -> None:
        """Wake the OCR server's dispatcher; never waits and never fails the caller. While one
        is on its way, later ones become a single follow-up: a burst costs a few wake-ups."""
        self._http()
        with self._lock:
            if self._notify_queued:
                return
            self._notify_queued = True
        assert self._notifier is not None
        # RuntimeError: the process is shutting down; the OCR server's poll finds the job.
        with contextlib.suppress(RuntimeError):
            self._notifier.submit(self._send_notify)

    def _send_notify(self) -> None:
        with self._lock:
            self._notify_queued = False
        try:
            self._http().post(NOTIFY_PATH, timeout=NOTIFY_TIMEOUT_S)
        except httpx.TransportError as exc:
            # A lost notify costs at most one poll interval of the OCR server.
            log.debug("notify failed: %s", exc)


class _Connection:
    """The socket of one call, cut when nobody waits for its answer any more: shut down (not
    only closed), it also ends a read blocked on it, and the OCR server sees it close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._cut = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's trace extension: keeps the socket of the connection the call opens."""
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
                cut = self._cut
            if cut:
                self.cut()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)


def _results(
    futures: list[Future[Reading]], deadline: float, gone: Future[None] | None
) -> list[Reading | OcrError]:
    """Each call's reading or OcrError, in order; CallerGone once ``gone`` is done; an error
    not a document's own at once; a 503 if the answers are late past their timeout."""
    give_up = time.monotonic() + max(deadline - time.monotonic(), 0) + ANSWER_GRACE_S + 5
    pending: set[Future[Any]] = set(futures)
    while pending:
        watched = pending | ({gone} if gone is not None else set())
        done, _ = wait(watched, timeout=give_up - time.monotonic(), return_when=FIRST_COMPLETED)
        if gone is not None and gone.done():
            raise CallerGone("the client went away before its answer; its read was stopped")
        if not done:
            raise _unavailable("the OCR server did not answer in time; retry shortly")
        for future in done:
            error = future.exception()
            if isinstance(error, Unavailable) or (error and not isinstance(error, OcrError)):
                raise error
        pending -= done
    out: list[Reading | OcrError] = []
    for future in futures:
        error = future.exception()
        out.append(error if isinstance(error, OcrError) else future.result())
    return out


def _is_error_body(answer: object) -> bool:
    """Whether ``answer`` has the shape of the OCR server's errors: {"error": {"code": ...}}."""
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str)


def _unavailable(message: str, code: str = "ocr_unavailable") -> Unavailable:
    return Unavailable(message, code=code, retry_after_s=RETRY_AFTER_S)
