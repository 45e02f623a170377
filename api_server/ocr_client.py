"""The API server's link to the OCR server: synchronous OCR and fire-and-forget notifies.

Flask handlers are synchronous; the HTTP calls run on one asyncio loop in a background thread
per process, sharing one aiohttp session (and its keep-alive connections).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, TypeVar

import aiohttp

from ocr_common.errors import (
    BadRequest,
    EngineError,
    InvalidImage,
    OcrError,
    PayloadTooLarge,
    Unavailable,
)
from ocr_common.observability import REQUEST_ID_HEADER, current_request_id
from ocr_common.options import OcrOptions
from ocr_common.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERNAL_TOKEN_HEADER = "X-Internal-Token"
CONNECT_TIMEOUT_S = 2.0
NOTIFY_TIMEOUT_S = 2.0
# How long a client should wait before retrying when the OCR server is down or busy.
RETRY_AFTER_S = 5
# Share of an API process's threads that may wait for the OCR server at once (/image-sync,
# /v1/ocr): a stalled OCR server holds each for up to OCR_SYNC_TIMEOUT_S, and the other
# threads must stay free for everything else.
SYNC_WAIT_SHARE = 0.5


class OcrBackend(Protocol):
    """What the API needs of the OCR server (a fake in unit tests)."""

    def recognize_many(self, images: list[bytes]) -> list[str | OcrError]: ...

    def recognize_document(
        self, document: bytes, options: OcrOptions, pages: int
    ) -> dict[str, Any]: ...

    def notify(self) -> None: ...


class OcrServerClient:
    """HTTP client of the OCR server's internal API."""

    def __init__(self, settings: Settings):
        self._base = settings.server_url
        self._headers: dict[str, str] = {}
        if settings.internal_token_value:
            self._headers[INTERNAL_TOKEN_HEADER] = settings.internal_token_value
        self._timeout_s = settings.sync_timeout_s
        self._parallel = settings.workers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._notifying: asyncio.Future[None] | None = None
        self._notify_again = False
        self._sync_waits = threading.BoundedSemaphore(
            max(1, int(settings.api_threads * SYNC_WAIT_SHARE))
        )

    @contextlib.contextmanager
    def _sync_wait(self) -> Iterator[None]:
        """Hold one of the process's synchronous waits, or answer 503 at once when all are
        taken (the OCR server is slow or stalled; waiting would tie up another thread)."""
        if not self._sync_waits.acquire(blocking=False):
            raise Unavailable(
                "every synchronous OCR slot of this API process is waiting for the OCR server; "
                "retry shortly, or use POST /image (or /v1/jobs) and poll",
                code="ocr_busy",
                retry_after_s=RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            self._sync_waits.release()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        # gunicorn forks workers after the app may have been built: a loop belongs to a process.
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="ocr-client", daemon=True)
                thread.start()
                self._loop, self._pid, self._session = loop, os.getpid(), None
                self._notifying, self._notify_again = None, False
            return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            )
        return self._session

    def recognize_many(self, images: list[bytes]) -> list[str | OcrError]:
        """Tesseract's text for each image, from the OCR server's POST /ocr, in order.

        The images go at once, so the OCR server spreads them over its engines. A failure of
        one image is returned in its place; the OCR server being unreachable is raised.
        """

        async def gather() -> list[str | OcrError]:
            # One request's images must not fill the OCR server's wait list by themselves:
            # send as many at a time as it has engines.
            slots = asyncio.Semaphore(self._parallel)

            async def one(image: bytes) -> str:
                async with slots:
                    body = await self._post_ocr(image, self._timeout_s, request_id=request_id)
                    return str(body["text"])

            results = await asyncio.gather(*(one(i) for i in images), return_exceptions=True)
            out: list[str | OcrError] = []
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, OcrError):
                    raise result
                out.append(result)
            return out

        # The id goes by hand: the coroutines run on the client's own loop thread.
        request_id = current_request_id()
        rounds = -(-len(images) // self._parallel)
        with self._sync_wait():
            return _wait(self._submit(gather()), self._timeout_s * rounds)

    def recognize_document(
        self, document: bytes, options: OcrOptions, pages: int
    ) -> dict[str, Any]:
        """The rich result of a v1 document from the OCR server, which reads its pages in
        parallel: ``{"format", "page_count", "text", "pages"}``."""
        # Pages go ``workers`` at a time, each within its own time limit on the OCR server.
        rounds = -(-pages // self._parallel)
        timeout_s = self._timeout_s * rounds
        # Options travel in the body: a long char_whitelist would not fit a request line.
        body = {"document": base64.b64encode(document).decode(), "options": options.to_values()}
        request_id = current_request_id()
        with self._sync_wait():
            post = self._post_ocr(body, timeout_s, request_id=request_id)
            return dict(_wait(self._submit(post), timeout_s))

    async def _post_ocr(
        self, data: bytes | dict[str, Any], timeout_s: float, *, request_id: str | None
    ) -> dict[str, Any]:
        """POST /ocr with an image (bytes: its text) or a v1 document and its options (a
        dict, sent as JSON: the rich result)."""
        session = await self._get_session()
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=CONNECT_TIMEOUT_S)
        document = isinstance(data, dict)
        headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
        sent: dict[str, Any] = {"json": data}
        if not document:
            sent = {"data": data}
            headers["Content-Type"] = "application/octet-stream"
        try:
            async with session.post(
                f"{self._base}/ocr", headers=headers, timeout=timeout, **sent
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"the OCR server at {self._base} is not answering ({type(exc).__name__}); "
                "retry shortly",
                code="ocr_unavailable",
                retry_after_s=RETRY_AFTER_S,
            ) from None
        try:
            body = json.loads(raw)
        except ValueError:
            # Not our answer (aiohttp's own, or something in between): its status still says
            # whether retrying can help.
            body = {"error": {"message": raw[:200].decode(errors="replace")}}
        if status == 200 and isinstance(body, dict):
            return body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code, message = error.get("code", "ocr_error"), error.get("message", "OCR failed")
        field = error.get("field")
        if document and status == 400:
            raise BadRequest(message, code=code, field=field)
        if document and status == 413:
            raise PayloadTooLarge(message, code=code, field=field)
        if status == 503:
            raise Unavailable(message, code=code, retry_after_s=int(retry_after or RETRY_AFTER_S))
        if status in (400, 413):
            raise InvalidImage(message, code=code)
        if status == 422:
            raise EngineError(message, code=code)
        if status >= 500 or status == 200:
            raise Unavailable(
                f"the OCR server answered {status}: {message}",
                code="ocr_unavailable",
                retry_after_s=RETRY_AFTER_S,
            )
        # Any other 4xx: the same request would be refused again, so no "retry" (a bug, or a
        # wrong OCR_INTERNAL_TOKEN).
        log.error("the OCR server refused a request with %d: %s", status, message)
        raise OcrError(f"the OCR server refused the request ({status}): {message}")

    def notify(self) -> None:
        """Wake the OCR server's dispatcher; never waits and never fails the caller.

        Notifies coalesce: while one is on its way, later ones become a single follow-up, so a
        burst of submits costs the OCR server a few wake-ups, not one per job.
        """
        # RuntimeError: the loop closed during shutdown; the OCR server's poll finds the job.
        with contextlib.suppress(RuntimeError):
            self._ensure_loop().call_soon_threadsafe(self._request_notify)

    def _request_notify(self) -> None:
        # Runs on the loop thread only, so the two fields need no lock.
        if self._notifying is not None and not self._notifying.done():
            self._notify_again = True
            return
        self._notifying = asyncio.ensure_future(self._send_notifies())

    async def _send_notifies(self) -> None:
        while True:
            self._notify_again = False
            await self._notify()
            if not self._notify_again:
                return

    async def _notify(self) -> None:
        session = await self._get_session()
        try:
            async with session.post(
                f"{self._base}/jobs/notify", timeout=aiohttp.ClientTimeout(total=NOTIFY_TIMEOUT_S)
            ):
                pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            # A lost notify costs at most one poll interval of the OCR server.
            log.debug("notify failed: %s", exc)


def _wait(future: Future[T], timeout_s: float) -> T:
    """The call's result; a 503 if the loop has not produced it a little after its own timeout
    (that guards against a stuck loop, not a slow OCR server)."""
    try:
        return future.result(timeout=timeout_s + 5)
    except FutureTimeout:
        future.cancel()
        raise Unavailable(
            "the OCR server did not answer in time; retry shortly",
            code="ocr_unavailable",
            retry_after_s=RETRY_AFTER_S,
        ) from None
