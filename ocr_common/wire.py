"""The contract between the API server and the OCR server's internal API, imported by both:
paths, headers, and how an ``OcrError`` crosses the wire and is raised again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, EngineError, OcrError, PayloadTooLarge, Unavailable
from .result import PackedPage, Page, document_text, page_from_json

INTERNAL_TOKEN_HEADER = "X-Internal-Token"
# On POST /ocr: the seconds the caller will still wait for the answer (its OCR_SYNC_TIMEOUT_S,
# less what it has spent). The OCR server stops the read when they have passed, as it does when
# the caller hangs up, and answers ``sync_timeout``.
TIME_LEFT_HEADER = "X-OCR-Time-Left-S"
# POST {"document": base64, "options": {...}}: the ``Reading`` of the selected pages.
OCR_PATH = "/ocr"
# POST: a job was committed, claim now rather than at the next poll.
NOTIFY_PATH = "/jobs/notify"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"
STATUS_PATH = "/status"
# Probes: a kubelet or compose healthcheck cannot send the token, and neither answer tells a
# caller more than "up" and "the database answers".
UNGUARDED_PATHS = frozenset({HEALTHZ_PATH, READYZ_PATH})
# How long a client should wait before retrying when the OCR server is down or busy.
RETRY_AFTER_S = 5

# The statuses an OCR server error may carry back to a client of the API, and the kind of
# error each is raised as again; a 5xx (or an answer that is not ours) is the OCR server's own
# trouble (a 503, retry); any other 4xx would be refused again (a 500).
_KINDS: dict[int, type[OcrError]] = {
    BadRequest.status: BadRequest,
    PayloadTooLarge.status: PayloadTooLarge,
    EngineError.status: EngineError,
    Unavailable.status: Unavailable,
}


def error_body(exc: OcrError) -> dict[str, Any]:
    """The JSON body an error is answered with (both services' original-API shape)."""
    error: dict[str, str] = exc.to_dict()
    if exc.field is not None:
        error["field"] = exc.field
    return {"error": error}


def error_headers(exc: OcrError) -> dict[str, str]:
    return {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}


def error_from_wire(status: int, body: object, retry_after: str | None = None) -> OcrError:
    """The error an OCR server answer stands for (the reverse of ``error_body``)."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code", "ocr_error"))
    message = str(error.get("message", "OCR failed"))
    kind = _KINDS.get(status)
    if kind is Unavailable:
        seconds = int(retry_after) if retry_after and retry_after.isdigit() else RETRY_AFTER_S
        return Unavailable(message, code=code, retry_after_s=seconds)
    if kind is None and (status >= 500 or status < 400):
        return Unavailable(
            f"the OCR server answered {status}: {message}",
            code="ocr_unavailable",
            retry_after_s=RETRY_AFTER_S,
        )
    if kind is None:
        # Any other 4xx: the same request would be refused again, so no "retry" (a bug, or a
        # wrong OCR_INTERNAL_TOKEN): the API's 500, logged there.
        return OcrError(f"the OCR server refused the request ({status}): {message}")
    field = error.get("field")
    return kind(message, code=code, field=str(field) if field is not None else None)


@dataclass(frozen=True)
class Reading:
    """What POST /ocr answers: the document's format and page count, and its selected pages
    read (packed on the wire, as the job store keeps them)."""

    format: str
    page_count: int
    pages: list[Page]

    @property
    def text(self) -> str:
        return document_text(self.pages)

    @staticmethod
    def to_wire(format: str, page_count: int, pages: list[PackedPage]) -> dict[str, Any]:
        """The OCR server's answer: the pages as its engines packed them, not made models."""
        return {"format": format, "page_count": page_count, "pages": pages}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Reading:
        return cls(
            format=str(body["format"]),
            page_count=int(body["page_count"]),
            pages=[page_from_json(page) for page in body["pages"]],
        )
