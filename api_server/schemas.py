"""The shapes of what the API takes and answers: pydantic models (the tests check real answers
against them) and the parameters and bodies the views document with ``openapi.Operation``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ocr_common.models import DeliveryStatus, JobStatus
from ocr_common.options import OcrOptions
from ocr_common.webhooks import WEBHOOK_URL_FIELD, WEBHOOK_URL_MAX_CHARS

from .errors import PROBLEM_JSON
from .idempotency import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_CHARS
from .openapi import Body, Param
from .pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from .rendering import FORMATS, HOCR_MEDIA_TYPE, TSV_MEDIA_TYPE


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BoundingBox(Schema):
    """A rectangle in pixels of the (upright) page, from its top-left corner."""

    left: int = Field(ge=0)
    top: int = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)


class Word(Schema):
    text: str
    confidence: float = Field(ge=0, le=100, description="Tesseract's confidence, 0-100")
    bbox: BoundingBox


class Line(Schema):
    text: str
    confidence: float = Field(ge=0, le=100)
    bbox: BoundingBox
    words: list[Word]


class Page(Schema):
    page: int = Field(ge=1, description="the page number in the document, from 1")
    width: int = Field(ge=1, description="pixels, after rendering and rotation")
    height: int = Field(ge=1)
    dpi: int | None = Field(description="the resolution the page was read at, when known")
    rotation: Literal[0, 90, 180, 270] = Field(
        description="how far clockwise the page as sent was turned from upright (detected "
        "with preprocess=auto, and undone before reading: boxes are on the upright page)"
    )
    rotation_confidence: Literal["high", "low"] | None = Field(
        default=None,
        description="preprocess=auto: high when reading confirmed which way up the page is, "
        "low when no turn read clearly better and the page was read as sent (see warnings); "
        "null without auto",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what a reader of this page should know, e.g. a low confidence orientation",
    )
    text: str
    confidence: float | None = Field(ge=0, le=100, description="mean word confidence")
    lines: list[Line]


class ErrorDetail(Schema):
    code: str = Field(description="stable, for programs")
    message: str = Field(description="for people: what went wrong and what to do")


class Progress(Schema):
    pages_done: int = Field(ge=0)
    pages_total: int = Field(ge=0)


class JobSummary(Schema):
    id: str = Field(description="UUID")
    status: JobStatus
    kind: Literal["async", "sync"] = Field(
        description="async: POST /v1/jobs or /image; sync: POST /v1/ocr or /image-sync"
    )
    api: Literal["original", "v1"] = Field(
        description="which API made the job: original (/image, /image-sync) or v1"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(ge=0)
    max_attempts: int = Field(ge=0)
    format: str | None = Field(description="the document format found in its bytes")
    options: OcrOptions | None = Field(
        description="null for jobs of the original API made before they kept their pages"
    )
    progress: Progress | None = Field(description="pages read so far")
    error: ErrorDetail | None = Field(description="why the job failed or was canceled")
    webhook_url: str | None = Field(
        description="where the job's end is POSTed (a password in it shown as ***)"
    )


class WebhookDelivery(Schema):
    """One event POSTed to the job's webhook_url, and how its attempts went."""

    id: str = Field(description="the webhook-id header, the same on every attempt")
    event: Literal["job.succeeded", "job.failed", "job.canceled"]
    status: DeliveryStatus
    attempts: int = Field(ge=0)
    created_at: datetime = Field(description="when the job ended")
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="the HTTP status the receiver last answered")
    last_error: str | None = Field(description="why the last attempt failed")
    next_attempt_at: datetime | None = Field(description="when it is tried next, while pending")


class Job(JobSummary):
    text: str | None = Field(description="the text of every page (pages end in a form feed)")
    pages: list[Page] | None = Field(description="when succeeded: pages, lines, words, boxes")
    webhook_deliveries: list[WebhookDelivery] | None = Field(
        description="with a webhook_url: the event sent when the job ended"
    )


class JobLinks(Schema):
    job: str = Field(description="the job, a path of this API")
    text: str | None = Field(default=None, description="its text, when it succeeded")


class WebhookJob(JobSummary):
    links: JobLinks


class WebhookEvent(Schema):
    """What is POSTed to a job's webhook_url when it ends, signed as Standard Webhooks says
    (headers webhook-id, webhook-timestamp, webhook-signature)."""

    type: Literal["job.succeeded", "job.failed", "job.canceled"]
    timestamp: datetime = Field(description="when the job ended")
    data: WebhookJob


class JobList(Schema):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class Problem(BaseModel):
    """An error of the v1 API (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="stable error code")
    instance: str | None = None
    field: str | None = Field(default=None, description="the request field at fault")


class JsonDocument(OcrOptions):
    """A document sent as JSON: base64 bytes and the options beside them."""

    document: str = Field(description="the file's bytes, base64 (a data: URL prefix is fine)")


WEBHOOK_URL_DESCRIPTION = (
    "an http(s) URL POSTed to, signed, when the job ends (not at a loopback, private or "
    "link-local address); default: the API key's from OCR_WEBHOOK_DEFAULTS"
)


class JsonJobDocument(JsonDocument):
    """A document to queue, sent as JSON."""

    webhook_url: str | None = Field(
        default=None, max_length=WEBHOOK_URL_MAX_CHARS, description=WEBHOOK_URL_DESCRIPTION
    )


# -- the original API ---------------------------------------------------------------------


class CompatError(Schema):
    """An error of the original API."""

    error: ErrorDetail


class CompatImage(BaseModel):
    image_data: str | list[str] | None = Field(
        default=None, description="base64 image, or a list of them"
    )
    image_data_list: list[str] | None = Field(
        default=None, description='a list of base64 images (when there is no "image_data")'
    )


class CompatText(Schema):
    text: str | list[str]


class CompatTaskId(Schema):
    task_id: str | list[str]


class CompatResult(Schema):
    task_id: str | None = Field(description="the text, or null while the task is not done")
    text: str | None = Field(
        default=None, description="the same, when the id came in the query string"
    )


class CompatAllImages(RootModel[dict[str, str | None]]):
    """Every task id and its text (null while not done), oldest first."""


class Status(BaseModel):
    status: str


# -- what the v1 views document ---------------------------------------------------------------


def _option_param(name: str, schema: dict[str, Any]) -> Param:
    """A query parameter or form field of an option, from the options model's schema: its
    first form that is not null (for ``pages``, the "1-3,7" string)."""
    forms = [form for form in schema.get("anyOf", [schema]) if form.get("type") != "null"]
    wire = {key: value for key, value in forms[0].items() if key not in ("title", "examples")}
    if schema.get("default") is not None:
        wire["default"] = schema["default"]
    return Param(name, wire, schema.get("description", ""))


OPTION_PARAMS = tuple(
    _option_param(name, schema)
    for name, schema in OcrOptions.model_json_schema()["properties"].items()
)
WEBHOOK_URL_PARAM = Param(
    WEBHOOK_URL_FIELD,
    {"type": "string", "format": "uri", "maxLength": WEBHOOK_URL_MAX_CHARS},
    WEBHOOK_URL_DESCRIPTION,
)
WEBHOOK_HEADERS = (
    Param("webhook-id", {"type": "string"}, "the event's id (msg_...)", where="header"),
    Param("webhook-timestamp", {"type": "string"}, "Unix seconds of the attempt", where="header"),
    Param(
        "webhook-signature",
        {"type": "string"},
        "v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>, one per OCR_WEBHOOK_SECRET",
        where="header",
    ),
)
FORMAT_PARAM = Param(
    "format", {"type": "string", "enum": list(FORMATS)}, "json (default), text, hocr or tsv"
)
IDEMPOTENCY_PARAM = Param(
    IDEMPOTENCY_HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
    "a key of your choice that makes retrying this POST safe",
    where="header",
)
LIST_PARAMS = (
    Param("status", {"type": "string", "enum": [s.value for s in JobStatus]}),
    Param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        f"jobs per page (default {DEFAULT_PAGE_SIZE})",
    ),
    Param("cursor", {"type": "string"}, "next_cursor of the page before"),
)
_BINARY = {"type": "string", "format": "binary"}


def _document_body(params: tuple[Param, ...], json: type[BaseModel]) -> Body:
    return Body(
        "the document: PNG, JPEG, TIFF (every page), BMP, GIF (first frame), WebP or PDF; the "
        "format is found from the bytes",
        {
            "multipart/form-data": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": _BINARY, **{p.name: p.schema for p in params}},
            },
            "application/json": json,
            "application/pdf": _BINARY,
            "image/png": _BINARY,
            "image/jpeg": _BINARY,
            "image/tiff": _BINARY,
            "application/octet-stream": _BINARY,
        },
    )


DOCUMENT_BODY = _document_body(OPTION_PARAMS, JsonDocument)
JOB_PARAMS = (*OPTION_PARAMS, WEBHOOK_URL_PARAM)
JOB_DOCUMENT_BODY = _document_body(JOB_PARAMS, JsonJobDocument)


def problem(description: str) -> Body:
    return Body(description, {PROBLEM_JSON: Problem})


RESULT_CONTENT: dict[str, type[BaseModel] | dict[str, Any]] = {
    "application/json": Job,
    "text/plain": {"type": "string"},
    HOCR_MEDIA_TYPE: {"type": "string"},
    TSV_MEDIA_TYPE: {"type": "string"},
}
SUBMIT_ERRORS = {
    400: problem("bad document or option (the problem's field names it)"),
    413: problem("the document is over a limit: bytes, pixels or OCR_MAX_PAGES"),
    415: problem("the body is not multipart, JSON or an image/PDF"),
    503: problem("the database or the OCR server is unavailable; retry after Retry-After"),
}


# -- what the original API's views document ---------------------------------------------------


def compat_error(description: str) -> Body:
    return Body(description, {"application/json": CompatError})


IMAGE_BODY = Body("base64 image(s)", {"application/json": CompatImage})
UPLOAD_ERRORS = {
    400: compat_error("malformed body, base64 or image"),
    413: compat_error(
        "an image is over OCR_MAX_UPLOAD_BYTES or OCR_MAX_PIXELS, or the list over OCR_MAX_BATCH"
    ),
    503: compat_error("the database (or OCR server) is unavailable; nothing was stored"),
}
