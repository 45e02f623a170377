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
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, NamedTuple, Protocol, TypeVar

import aiohttp

from ocr_common.errors import CallerGone, OcrError, SyncTimeout, Unavailable
from ocr_common.observability import REQUEST_ID_HEADER, current_request_id
from ocr_common.options import OcrOptions
from ocr_common.settings import Settings
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
T = TypeVar("T")

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


class OcrServerClient:
    """HTTP client of the OCR server's internal API."""

    def __init__(self, settings: Settings):
        self._base = settings.server_url
        self._headers: dict[str, str] = {}
        if settings.internal_token_value:
            self._headers[INTERNAL_TOKEN_HEADER] = settings.internal_token_value
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
            raise _unavailable(
                "every synchronous OCR slot of this API process is waiting for the OCR server; "
                "retry shortly, or use POST /image (or /v1/jobs) and poll",
                code="ocr_busy",
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

    def recognize(
        self, requests: list[OcrRequest], *, deadline: float, gone: Future[None] | None = None
    ) -> list[Reading | OcrError]:
        """The reading of each document from the OCR server's POST /ocr, in order, or the
        error that document met.

        The documents go at once, so the OCR server spreads them over its engines (and the
        pages of each). Each request says how long is left until ``deadline`` (a
        ``time.monotonic()`` time), past which the OCR server stops reading and answers
        ``sync_timeout``; when ``gone`` is done (the API's own caller hung up), the requests
        are dropped, which stops the reads as well, and CallerGone is raised. The OCR server
        being unreachable or saturated is raised.
        """

        async def gather() -> list[Reading | OcrError]:
            # One request's documents must not fill the OCR server's wait list by themselves:
            # send as many at a time as it has engines.
            slots = asyncio.Semaphore(self._parallel)

            async def one(request: OcrRequest) -> Reading:
                async with slots:
                    # Options travel in the body: a long char_whitelist would not fit a
                    # request line.
                    body = {
                        "document": base64.b64encode(request.document).decode(),
                        "options": request.options.to_values(),
                    }
                    left_s = deadline - time.monotonic()
                    if left_s <= 0:
                        raise SyncTimeout(SYNC_TIMEOUT_MESSAGE)
                    # The OCR server stops at the time left; the grace lets its answer come.
                    timed = {**headers, TIME_LEFT_HEADER: f"{left_s:.3f}"}
                    answer = await self._call(
                        "POST", OCR_PATH, left_s + ANSWER_GRACE_S, json=body, headers=timed
                    )
                    return Reading.from_wire(answer)

            results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
            out: list[Reading | OcrError] = []
            for result in results:
                if isinstance(result, Unavailable) or (
                    isinstance(result, BaseException) and not isinstance(result, OcrError)
                ):
                    raise result
                out.append(result)
            return out

        # The id goes by hand: the coroutines run on the client's own loop thread.
        request_id = current_request_id()
        headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
        with self._sync_wait():
            return _wait(self._submit(gather()), deadline - time.monotonic(), gone)

    async def _call(self, method: str, path: str, timeout_s: float, **kwargs: Any) -> Any:
        """The OCR server's JSON answer to a request; any answer but a 200 with a JSON object
        is raised as the error it stands for."""
        session = await self._get_session()
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=CONNECT_TIMEOUT_S)
        try:
            async with session.request(
                method, f"{self._base}{path}", timeout=timeout, **kwargs
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unavailable(
                f"the OCR server at {self._base} is not answering ({type(exc).__name__}); "
                "retry shortly"
            ) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            # Not our answer (aiohttp's own, or something in between): its status still says
            # whether retrying can help.
            answer = None
        if status == 200 and isinstance(answer, dict):
            return answer
        if answer is None:
            answer = {"error": {"message": raw[:200].decode(errors="replace")}}
        raise error_from_wire(status, answer, retry_after)

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
        timeout = aiohttp.ClientTimeout(total=NOTIFY_TIMEOUT_S)
        while True:
            self._notify_again = False
            session = await self._get_session()
            try:
                async with session.post(f"{self._base}{NOTIFY_PATH}", timeout=timeout):
                    pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                # A lost notify costs at most one poll interval of the OCR server.
                log.debug("notify failed: %s", exc)
            if not self._notify_again:
                return


def _wait(future: Future[T], timeout_s: float, gone: Future[None] | None = None) -> T:
    """The call's result; CallerGone (the call dropped) as soon as ``gone`` is done; a 503 if
    the loop has not produced it a little after its own timeout (that guards against a stuck
    loop, not a slow OCR server)."""
    waiting: list[Future[Any]] = [future] if gone is None else [future, gone]
    done, _ = wait(
        waiting, timeout=max(timeout_s, 0) + ANSWER_GRACE_S + 5, return_when=FIRST_COMPLETED
    )
    if future in done:
        return future.result()
    # Dropped on the client's loop: its connection to the OCR server closes, which stops the
    # read there.
    future.cancel()
    if gone is not None and gone.done():
        raise CallerGone("the client went away before its answer; its read was stopped")
    raise _unavailable("the OCR server did not answer in time; retry shortly")


def _unavailable(message: str, code: str = "ocr_unavailable") -> Unavailable:
    return Unavailable(message, code=code, retry_after_s=RETRY_AFTER_S)
