"""A typed client of the OCR service's public HTTP API: the original API and v1.

It needs only ``requests`` and ``tenacity`` (no server code): a program that wants OCR imports
``OcrClient``; the ``ocr-client`` command and ``test/client_test.py`` are built on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

DEFAULT_URL = "http://127.0.0.1:5000"
# What the OCR server's internal API says it is at /healthz (the API server says no name).
INTERNAL_SERVICE = "ocr-server"
REQUEST_TIMEOUT_S = 180.0
POLL_INTERVAL_S = 0.5
# Answers that mean "not now": the service says when to come back in Retry-After.
RETRY_STATUSES = frozenset({429, 503})
# The 429 of an address locked out after requests with a wrong API key: waiting it out with the
# same key only starts another lockout.
AUTH_LOCKOUT = "too_many_auth_failures"
# Added at random to each back-off, so that clients that failed together do not retry together.
BACKOFF_JITTER_S = 1.0
# The job states after which nothing changes (the API's JobStatus, checked by a test).
FINISHED = frozenset({"succeeded", "failed", "canceled"})

# Union, not X | Y: a type alias is evaluated when the module loads, and the client runs on 3.9.
OptionValue = Union[str, int]
Options = Mapping[str, OptionValue]


class ClientError(Exception):
    """The server answered with an error, or could not be reached."""


class ApiError(ClientError):
    """An error answer: its HTTP status, the API's stable ``code`` and its message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        field: str | None = None,
    ):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.field = field

    @property
    def refuses_the_key(self) -> bool:
        """The API key is missing or wrong (401), or the address is locked out after wrong
        ones: no request with it will do until it is changed."""
        return self.status == 401 or (self.status == 429 and self.code == AUTH_LOCKOUT)

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        """Both error shapes: the original API's ``{"error": {code, message}}`` and v1's
        problem+json ``{code, detail}``; anything else (a proxy's page) by its text."""
        code, message, field_name = f"http_{response.status_code}", "", None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                code = str(error.get("code", code))
                message = str(error.get("message", ""))
            elif "detail" in body:
                code = str(body.get("code", code))
                message = str(body["detail"])
                field_name = body.get("field")
        if not message:
            message = response.text.strip() or response.reason or "no message"
        return cls(
            response.status_code,
            code,
            message,
            retry_after_s=_retry_after_s(response.headers.get("Retry-After")),
            field=field_name,
        )


class Unreachable(ClientError):
    """No answer: refused, reset, or timed out; ``reason`` says which, in a few words."""

    def __init__(self, message: str, *, reason: str = "no answer"):
        super().__init__(message)
        self.reason = reason


class NotTheService(ClientError):
    """Something answers at the URL, but not the OCR service's API."""


class Stopped(ClientError):
    """The caller asked to stop (Ctrl-C) while waiting."""


def _reason(exc: requests.RequestException) -> str:
    """Why a request got no answer, in a few words: the operating system's reason (connection
    refused, name unknown, ...) found in the exceptions requests and urllib3 wrap it in."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    seen: list[BaseException] = []
    pending: list[object] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or current in seen:
            continue
        seen.append(current)
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        if isinstance(current, ConnectionError) and str(current):
            # http.client's RemoteDisconnected: no errno, its reason in its message.
            return str(current).lower()
        pending += [*current.args, getattr(current, "reason", None)]
        pending += [current.__cause__, current.__context__]
    return type(exc).__name__


def check_url(url: str) -> str:
    """``url``, if it is an http:// or https:// URL with a host; else a ValueError that says
    what it needs (without a scheme requests can never send it: retrying would not help)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    if "://" not in url:
        raise ValueError(f"{url!r} needs http:// or https:// in front (e.g. 'http://{url}')")
    raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")


# The formats the API gives as bytes, not text.
BINARY_FORMATS = frozenset({"pdf"})


def _text_format(fmt: str, bytes_method: str) -> None:
    """Refuse a format whose answer is bytes, naming the method that returns it (decoded as
    text, a PDF would be mangled)."""
    if fmt.lower() in BINARY_FORMATS:
        raise ClientError(f"the {fmt!r} format is bytes, not text: use {bytes_method}()")


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is not sent by this service."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying when the service says "not now" (429, 503) or does not answer.

    Waits what ``Retry-After`` asks (up to ``max_retry_after_s``), else backs off exponentially
    up to ``max_backoff_s``, plus up to ``BACKOFF_JITTER_S`` at random; gives up after
    ``max_attempts`` or ``max_total_s``.
    """

    max_attempts: int = 1
    max_total_s: float = 120.0
    max_retry_after_s: float = 60.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 5.0

    @classmethod
    def patient(cls, total_s: float = 120.0) -> RetryPolicy:
        """Ride out a restart or a busy spell of up to ``total_s`` seconds."""
        return cls(max_attempts=1_000_000, max_total_s=total_s)

    def should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, ApiError):
            return exc.status in RETRY_STATUSES and not exc.refuses_the_key
        return isinstance(exc, Unreachable)

    def wait_s(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.max_retry_after_s)
        # Not wait_exponential_jitter: tenacity 9.2 renamed its argument, and 9.1 is the newest
        # that Python 3.9 gets.
        backoff = wait_exponential(
            multiplier=self.initial_backoff_s, max=self.max_backoff_s
        ) + wait_random(0, BACKOFF_JITTER_S)
        return float(backoff(state))

    def retrying(self, sleep: Callable[[float], None] = time.sleep) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_total_s),
            wait=self.wait_s,
            retry=retry_if_exception(self.should_retry),
            reraise=True,
            sleep=sleep,
        )


@dataclass(frozen=True)
class Progress:
    pages_done: int
    pages_total: int


@dataclass(frozen=True)
class Job:
    """A v1 job as ``GET /v1/jobs/{id}`` answers it; ``body`` is the whole answer."""

    id: str
    status: str
    progress: Progress | None
    error_code: str | None
    error_message: str | None
    text: str | None
    body: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        progress = body.get("progress")
        error = body.get("error") or {}
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            progress=Progress(int(progress["pages_done"]), int(progress["pages_total"]))
            if progress
            else None,
            error_code=error.get("code"),
            error_message=error.get("message"),
            text=body.get("text"),
            body=body,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class OcrClient:
    """Calls one OCR service. Safe to share between threads (a session per thread); a ``url``
    that is not http:// or https:// is a ValueError."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ):
        self.url = check_url(url).rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()
        # Set to stop every wait of this client (polls, retry back-offs) at once: Ctrl-C.
        self.stopping = threading.Event()

    def check_service(self) -> None:
        """Make sure the URL is the OCR service's API, retrying an unreachable one as the
        policy says; each failure is a one-line ``ClientError`` that says what is wrong."""
        try:
            answer = self._call("GET", "/healthz")
            body = answer.json()
        except Unreachable as exc:
            raise Unreachable(
                f"no OCR service answers at {self.url} (tried for "
                f"{self.retry.max_total_s:g} s: {exc.reason})"
            ) from None
        except (ApiError, ValueError) as exc:
            what = f"HTTP {exc.status}" if isinstance(exc, ApiError) else "not JSON"
            raise NotTheService(
                f"{self.url} answers, but not as the OCR service's API (GET /healthz: {what}); "
                "check --url"
            ) from None
        if isinstance(body, dict) and body.get("service") == INTERNAL_SERVICE:
            raise NotTheService(
                f"{self.url} is the OCR server's internal API, not the API: use the API "
                "server's URL (port 5000 by default)"
            )
        if not (isinstance(body, dict) and body.get("status") == "ok"):
            raise NotTheService(
                f"{self.url} answers, but not as the OCR service's API (GET /healthz: "
                f"{str(body)[:80]}); check --url"
            )

    # -- the original API (its answers as they came) ---------------------------------------

    def image_sync(self, image_b64: str) -> dict[str, Any]:
        """``POST /image-sync``: ``{"text": ...}``."""
        return dict(self._call("POST", "/image-sync", json={"image_data": image_b64}).json())

    def post_image(self, image_b64: str) -> dict[str, Any]:
        """``POST /image``: ``{"task_id": ...}``."""
        return dict(self._call("POST", "/image", json={"image_data": image_b64}).json())

    def get_image(self, task_id: str) -> dict[str, Any]:
        """``GET /image``: ``{"task_id": text}``, the text null while not done."""
        return dict(self._call("GET", "/image", json={"task_id": task_id}).json())

    def wait_image(
        self, task_id: str, timeout_s: float, poll_interval_s: float = POLL_INTERVAL_S
    ) -> dict[str, Any]:
        """Poll ``GET /image`` until the task has its text."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.get_image(task_id)
            if answer.get("task_id") is not None:
                return answer
            if time.monotonic() > deadline:
                raise ClientError(f"task {task_id} is not done after {timeout_s:g} s")
            self._sleep(poll_interval_s)

    # -- v1 --------------------------------------------------------------------------------

    def submit(
        self,
        document: bytes,
        *,
        filename: str = "document",
        options: Options | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """``POST /v1/jobs``: the queued job. With an ``idempotency_key`` a retry after a lost
        answer returns the same job instead of a second one."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._post_document("/v1/jobs", document, filename, options, headers=headers)
        return Job.from_json(response.json())

    def job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``."""
        return Job.from_json(self._call("GET", f"/v1/jobs/{job_id}").json())

    def result(self, job_id: str, fmt: str = "text") -> str:
        """The finished job's text, JSON, hOCR, TSV or ALTO as the API renders it (the PDF,
        which is bytes: ``download``)."""
        _text_format(fmt, "download")
        return self._call("GET", f"/v1/jobs/{job_id}", params={"format": fmt}).text

    def download(self, job_id: str, fmt: str = "pdf") -> bytes:
        """The finished job in a format as the API renders it, as bytes (the searchable PDF)."""
        return bytes(self._call("GET", f"/v1/jobs/{job_id}", params={"format": fmt}).content)

    def wait(
        self,
        job_id: str,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        timeout_s: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll the job until it has finished (succeeded, failed or canceled)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"job {job_id} is still {job.status} after {timeout_s:g} s")
            self._sleep(poll_interval_s)

    def ocr(
        self,
        document: bytes,
        *,
        filename: str = "document",
        options: Options | None = None,
        fmt: str = "text",
    ) -> str:
        """``POST /v1/ocr``: read the document now; its text (or JSON, hOCR, TSV, ALTO; the
        PDF, which is bytes: ``ocr_bytes``)."""
        _text_format(fmt, "ocr_bytes")
        return self._post_document(
            "/v1/ocr", document, filename, options, params={"format": fmt}
        ).text

    def ocr_bytes(
        self,
        document: bytes,
        *,
        filename: str = "document",
        options: Options | None = None,
        fmt: str = "pdf",
    ) -> bytes:
        """``POST /v1/ocr``: read the document now; the answer's bytes (the searchable PDF)."""
        answer = self._post_document("/v1/ocr", document, filename, options, params={"format": fmt})
        return bytes(answer.content)

    # -- transport -------------------------------------------------------------------------

    def _post_document(
        self,
        path: str,
        document: bytes,
        filename: str,
        options: Options | None,
        **kwargs: Any,
    ) -> requests.Response:
        """The document as multipart ``file``, the options as form fields beside it."""
        return self._call(
            "POST",
            path,
            files={"file": (filename, document, "application/octet-stream")},
            data={k: str(v) for k, v in (options or {}).items()},
            **kwargs,
        )

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
        return session

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Stopped("stopped")

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request, retried as the policy says; an error answer raises ``ApiError``."""
        if self.stopping.is_set():
            raise Stopped("stopped")
        for attempt in self.retry.retrying(sleep=self._sleep):
            with attempt:
                return self._send(method, path, **kwargs)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.url + path
        try:
            response = self._session().request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            # One line: the reason in a few words, not requests' and urllib3's wrappers (the
            # whole chain is the exception's __cause__).
            reason = _reason(exc)
            raise Unreachable(f"cannot reach {url} ({reason})", reason=reason) from exc
        if not response.ok:
            raise ApiError.from_response(response)
        return response
