"""The domain error hierarchy: each error carries its HTTP status and a stable code."""

from __future__ import annotations

import json


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


class OcrError(Exception):
    """Base of every error a client may see; ``code`` is stable, ``message`` is for a person. A
    kind of error declares its status and default code in its class header."""

    status = 500
    code = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        super().__init_subclass__()
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: int | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s
        # The request field at fault, when there is one (v1 problems name it).
        self.field = field

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(OcrError, status=400, code="bad_request"):
    """The request itself is malformed: fix the request."""


class InvalidImage(BadRequest, code="invalid_image"):
    """The bytes are not an image we can read."""


class PayloadTooLarge(OcrError, status=413, code="payload_too_large"):
    """The upload or the decoded image is larger than the configured limit."""


class Unauthorized(OcrError, status=401, code="unauthorized"):
    """No credentials, or wrong ones (an API key, the OCR server's internal token)."""


class Forbidden(OcrError, status=403, code="forbidden"):
    """The caller may not make this request (a page of another site, through a browser)."""


class MisdirectedRequest(OcrError, status=421, code="invalid_host"):
    """The request names a host (its Host header) this service does not answer to."""


class NotFound(OcrError, status=404, code="not_found"):
    """Nothing of that name, or nothing the caller may see (a job of another key)."""


class JobFailed(OcrError, status=422, code="job_failed"):
    """The job ended without a result; the message says why (engine crash, timeout, bad image)."""


class RateLimited(OcrError, status=429, code="rate_limited"):
    """Over a limit that time lifts: the request rate (OCR_RATE_LIMIT), wrong keys from one
    address, or the per-key queue cap; retry after ``retry_after_s``."""


class Unavailable(OcrError, status=503, code="unavailable"):
    """A dependency (database, OCR server) is down or saturated; retry after ``retry_after_s``."""

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 2):
        super().__init__(message, code=code, retry_after_s=retry_after_s)


class EngineError(OcrError, status=422, code="engine_error"):
    """Tesseract could not produce a result for this page."""

    # Whether trying the same page again (on a fresh engine) could succeed.
    retryable = False


class EngineCrashed(EngineError, code="engine_crashed"):
    retryable = True


class EngineTimeout(EngineError, code="engine_timeout"):
    retryable = True


class SyncTimeout(EngineError, code="sync_timeout"):
    """A synchronous read did not end within its time (OCR_SYNC_TIMEOUT_S); its pages were
    stopped. The same document queued (POST /v1/jobs) has no such limit."""


class CallerGone(OcrError, status=499, code="client_closed_request"):
    """The client of a synchronous read went away before its answer (nginx's 499): its pages
    were stopped, nothing was stored, and no one reads this error but the access log."""


class DocumentTooComplex(EngineError, code="document_too_complex"):
    """The page needs more memory than an engine may use (OCR_ENGINE_MAX_MEMORY_MB) to draw it:
    it would on any engine, every time, so it is not tried again."""


class Conflict(OcrError, status=409, code="conflict"):
    """The request conflicts with the state of a resource (an idempotency key, a running job)."""


class UnsupportedMediaType(OcrError, status=415, code="unsupported_media_type"):
    """The request body comes in a form the endpoint does not read."""


def json_kind(value: object) -> str:
    """What a value parsed from JSON is, in JSON's words, for a message ("not an array")."""
    for kind, name in ((bool, "a boolean"), (int | float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return {type(None): "null", list: "an array", dict: "an object"}.get(type(value), "a value")


def json_text(value: object, limit: int = 40) -> str:
    """A value as JSON writes it (``true``, ``null``, ``1e400`` as ``Infinity``), cut to
    ``limit`` characters, for a message: a client sent JSON, not Python."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(str(value), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
