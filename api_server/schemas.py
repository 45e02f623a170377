"""The shapes of what the API takes and answers: pydantic models (the tests check real answers
against them) and the parameters and bodies the views document with ``openapi.Operation``.
Each model's example is what the service answered for ``example.png`` ("Hello OCR")."""

from __future__ import annotations

import base64
from datetime import datetime
from http import HTTPStatus
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ocr_common.job_store import MAX_COUNTED_AHEAD
from ocr_common.models import DeliveryStatus, JobStatus
from ocr_common.options import OcrOptions
from ocr_common.render import alto, hocr, tsv
from ocr_common.render.pdf import PDF_MEDIA_TYPE
from ocr_common.result import PAGE_EXAMPLE, Page
from ocr_common.webhooks import WEBHOOK_URL_FIELD, WEBHOOK_URL_MAX_CHARS

from .errors import PROBLEM_JSON
from .idempotency import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_CHARS
from .openapi import Body, Param
from .pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from .rendering import FORMATS


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


def example(value: Any) -> ConfigDict:
    """A model's config with ``value`` as the example of its JSON schema (pydantic merges it
    with the config the model inherits)."""
    return ConfigDict(json_schema_extra={"examples": [value]})


# -- examples: the service's answer for example.png (a line: "Hello OCR") ---------------------

EXAMPLE_PNG_B64 = base64.b64encode(
    resources.files("api_server").joinpath("example.png").read_bytes()
).decode("ascii")
EXAMPLE_JOB_ID = "0462584d-6010-4f0c-bb12-f0378205f66f"
EXAMPLE_TEXT = "Hello OCR\n"
OPTIONS_EXAMPLE = OcrOptions().model_dump(mode="json")
QUEUED_JOB_EXAMPLE = {
    "id": EXAMPLE_JOB_ID,
    "status": "queued",
    "kind": "async",
    "api": "v1",
    "created_at": "2026-12-04T19:43:13.081506Z",
    "started_at": None,
    "finished_at": None,
    "attempts": 0,
    "max_attempts": 3,
    "format": "PNG",
    "options": OPTIONS_EXAMPLE,
    "progress": {"pages_done": 0, "pages_total": 1},
    "error": None,
    "webhook_url": None,
}
JOB_SUMMARY_EXAMPLE = {
    **QUEUED_JOB_EXAMPLE,
    "status": "succeeded",
    "started_at": "2026-12-04T19:43:13.090211Z",
    "finished_at": "2026-12-04T19:43:13.147127Z",
    "attempts": 1,
    "progress": {"pages_done": 1, "pages_total": 1},
}
JOB_EXAMPLE = {
    **JOB_SUMMARY_EXAMPLE,
    "text": EXAMPLE_TEXT,
    "pages": [PAGE_EXAMPLE],
    "queue": None,
    "webhook_deliveries": None,
}
QUEUED_FULL_JOB_EXAMPLE = {
    **QUEUED_JOB_EXAMPLE,
    "text": None,
    "pages": None,
    "queue": {"jobs_ahead": 0, "ocr_servers_alive": 1, "stalled": None},
    "webhook_deliveries": None,
}
CANCELED_JOB_EXAMPLE = {
    **QUEUED_FULL_JOB_EXAMPLE,
    "status": "canceled",
    "finished_at": "2026-12-04T19:43:14.002417Z",
    "error": {"code": "canceled", "message": "canceled by its owner"},
    "queue": None,
}
TSV_EXAMPLE = (
    "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
    "1\t1\t0\t0\t0\t0\t0\t0\t300\t110\t-1\t\n"
    "2\t1\t1\t0\t0\t0\t34\t29\t181\t31\t-1\t\n"
    "3\t1\t1\t1\t0\t0\t34\t29\t181\t31\t-1\t\n"
    "4\t1\t1\t1\t1\t0\t34\t29\t181\t31\t-1\t\n"
    "5\t1\t1\t1\t1\t1\t34\t29\t89\t31\t95.980865\tHello\n"
    "5\t1\t1\t1\t1\t2\t135\t30\t80\t30\t96.809288\tOCR\n"
)
PSM_DETAIL = (
    '"psm": 2 is not a page segmentation mode that reads text; use one of 1, 3, 4, 5, 6, 7, 8, '
    "9, 10, 11, 12, 13"
)
HOCR_EXAMPLE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title></title>
  <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>
  <meta name="ocr-system" content="tesseract"/>
  <meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_par ocr_line ocrx_word ocrp_wconf"/>
 </head>
 <body>
  <div class='ocr_page' id='page_1' title='image "unknown"; bbox 0 0 300 110; ppageno 0; scan_res 70 70'>
   <div class='ocr_carea' id='block_1_1' title="bbox 34 29 215 60">
    <p class='ocr_par' id='par_1_1' lang='eng' title="bbox 34 29 215 60">
     <span class='ocr_line' id='line_1_1' title="bbox 34 29 215 60; baseline 0.006 -1; x_size 35.377777; x_descenders 5.3777776; x_ascenders 8">
      <span class='ocrx_word' id='word_1_1' title='bbox 34 29 123 60; x_wconf 95'>Hello</span>
      <span class='ocrx_word' id='word_1_2' title='bbox 135 30 215 60; x_wconf 96'>OCR</span>
     </span>
    </p>
   </div>
  </div>
 </body>
</html>
"""  # noqa: E501 - Tesseract's own lines


class ErrorDetail(Schema):
    code: str = Field(description="stable, for programs")
    message: str = Field(description="for people: what went wrong and what to do")


class Progress(Schema):
    pages_done: int = Field(ge=0)
    pages_total: int = Field(ge=0)


class JobSummary(Schema):
    model_config = example(JOB_SUMMARY_EXAMPLE)

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


class QueuePlace(Schema):
    """Where a queued job stands, and whether anything reads the queue."""

    jobs_ahead: int = Field(
        ge=0,
        description="queued jobs that will be read before this one (counted up to "
        f"{MAX_COUNTED_AHEAD}: that many means at least that many)",
    )
    ocr_servers_alive: int = Field(
        ge=0,
        description="OCR servers seen within OCR_STALE_WORKERS_S; while 0, nothing reads the "
        "queue and the job waits until one starts",
    )
    stalled: str | None = Field(
        description="why the job waits for nothing (no OCR server alive), for a person; null "
        "while OCR servers are alive"
    )


class Job(JobSummary):
    model_config = example(JOB_EXAMPLE)

    text: str | None = Field(description="the text of every page (pages end in a form feed)")
    pages: list[Page] | None = Field(description="when succeeded: pages, lines, words, boxes")
    queue: QueuePlace | None = Field(
        description="GET /v1/jobs/{id} of a queued job: its place in the queue and the OCR "
        "servers alive; null otherwise"
    )
    webhook_deliveries: list[WebhookDelivery] | None = Field(
        description="with a webhook_url: the event sent when the job ended"
    )


class Languages(Schema):
    model_config = example(
        {"languages": ["eng"], "default": "eng", "ocr_servers_alive": 1, "stalled": None}
    )

    languages: list[str] = Field(
        description="what lang= may name (several joined with +): the languages the models of "
        "every live OCR server read; with none alive, those of the last one seen; empty until "
        "an OCR server has been seen"
    )
    default: str = Field(description="the language read when lang= is not given")
    ocr_servers_alive: int = Field(ge=0, description="OCR servers seen within OCR_STALE_WORKERS_S")
    stalled: str | None = Field(
        description="why nothing reads the queue (no OCR server alive), for a person; null "
        "while OCR servers are alive"
    )


class JobLinks(Schema):
    job: str = Field(description="the job, a path of this API")
    text: str | None = Field(default=None, description="its text, when it succeeded")


WEBHOOK_JOB_EXAMPLE = {
    **JOB_SUMMARY_EXAMPLE,
    "webhook_url": "https://hooks.example.com/ocr",
    "links": {
        "job": f"/v1/jobs/{EXAMPLE_JOB_ID}",
        "text": f"/v1/jobs/{EXAMPLE_JOB_ID}?format=text",
    },
}


class WebhookJob(JobSummary):
    model_config = example(WEBHOOK_JOB_EXAMPLE)

    links: JobLinks


class WebhookEvent(Schema):
    """What is POSTed to a job's webhook_url when it ends, signed as Standard Webhooks says
    (headers webhook-id, webhook-timestamp, webhook-signature)."""

    model_config = example(
        {
            "type": "job.succeeded",
            "timestamp": JOB_SUMMARY_EXAMPLE["finished_at"],
            "data": WEBHOOK_JOB_EXAMPLE,
        }
    )

    type: Literal["job.succeeded", "job.failed", "job.canceled"]
    timestamp: datetime = Field(description="when the job ended")
    data: WebhookJob


class JobList(Schema):
    model_config = example({"jobs": [JOB_SUMMARY_EXAMPLE], "next_cursor": None})

    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class Problem(BaseModel):
    """An error of the v1 API (RFC 9457 problem details)."""

    model_config = example(
        {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": PSM_DETAIL,
            "code": "invalid_option",
            "instance": "/v1/jobs",
            "field": "psm",
        }
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="stable error code")
    instance: str | None = None
    field: str | None = Field(default=None, description="the request field at fault")


class JsonDocument(OcrOptions):
    """A document sent as JSON: base64 bytes and the options beside them."""

    model_config = example({"document": EXAMPLE_PNG_B64, "lang": "eng"})

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

    model_config = example(
        {"error": {"code": "invalid_base64", "message": '"image_data" is not valid base64'}}
    )

    error: ErrorDetail


class CompatImage(BaseModel):
    model_config = example({"image_data": EXAMPLE_PNG_B64})

    image_data: str | list[str] | None = Field(
        default=None, description="base64 image, or a list of them"
    )
    image_data_list: list[str] | None = Field(
        default=None, description='a list of base64 images (when there is no "image_data")'
    )


class CompatText(Schema):
    model_config = example({"text": EXAMPLE_TEXT})

    text: str | list[str]


class CompatTaskId(Schema):
    model_config = example({"task_id": EXAMPLE_JOB_ID})

    task_id: str | list[str]


class CompatResult(Schema):
    model_config = example({"task_id": EXAMPLE_TEXT})

    task_id: str | None = Field(description="the text, or null while the task is not done")
    text: str | None = Field(
        default=None, description="the same, when the id came in the query string"
    )


class CompatAllImages(RootModel[dict[str, str | None]]):
    """Every task id and its text (null while not done), oldest first."""

    model_config = example(
        {EXAMPLE_JOB_ID: EXAMPLE_TEXT, "9d0c3b7e-2f41-4e55-8a7c-5b1e2d3f4a60": None}
    )


class Status(BaseModel):
    model_config = example({"status": "ok"})

    status: str


class Readiness(Status):
    ocr_servers_alive: int | None = Field(
        default=None,
        description="OCR servers seen within OCR_STALE_WORKERS_S (not counted with "
        "?exclude=ocr_servers)",
    )


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
# Every delivery carries all three.
WEBHOOK_HEADERS = tuple(
    Param(name, {"type": "string"}, description, where="header", required=True)
    for name, description in (
        ("webhook-id", "the event's id (msg_...)"),
        ("webhook-timestamp", "Unix seconds of the attempt"),
        (
            "webhook-signature",
            "v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>, one per OCR_WEBHOOK_SECRET",
        ),
    )
)
FORMAT_PARAM = Param(
    "format",
    {"type": "string", "enum": list(FORMATS)},
    "json (default), text, hocr, tsv, alto (ALTO XML, as Tesseract writes it) or pdf (the "
    "document searchable: its pages with the text under them; also Accept: application/pdf)",
)
JOB_ID_PARAM = Param(
    "job_id", {"type": "string"}, "the job's id (a UUID)", where="path", example=EXAMPLE_JOB_ID
)
PAGE_NUMBER_PARAM = Param(
    "page",
    {"type": "integer", "minimum": 1},
    "the page's number in the document",
    where="path",
    example=1,
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
            # First: what /docs shows and tries first (its example reads as "Hello OCR").
            "application/json": json,
            "multipart/form-data": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": _BINARY, **{p.name: p.schema for p in params}},
            },
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


def problem(status: int, description: str, code: str, detail: str) -> Body:
    """A problem+json answer of ``status``, with an example of it."""
    example = Problem(
        title=HTTPStatus(status).phrase, status=status, detail=detail, code=code
    ).model_dump(exclude_none=True)
    return Body(description, {PROBLEM_JSON: Problem}, examples={PROBLEM_JSON: example})


KEY_MISSING = "this service needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>"
ALTO_EXAMPLE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<alto xmlns="http://www.loc.gov/standards/alto/ns-v3#"'
    ' ...>\n\t<Layout>\n\t\t<Page WIDTH="300" HEIGHT="110" PHYSICAL_IMG_NR="0" ID="page_0">\n'
    '\t\t\t<PrintSpace HPOS="0" VPOS="0" WIDTH="300" HEIGHT="110">\n ... <String ID="string_0"'
    ' HPOS="34" VPOS="29" WIDTH="89" HEIGHT="31" WC="0.95" CONTENT="Hello"/> ...'
)
RESULT_CONTENT: dict[str, type[BaseModel] | dict[str, Any]] = {
    "application/json": Job,
    "text/plain": {"type": "string", "examples": [EXAMPLE_TEXT]},
    hocr.MEDIA_TYPE: {"type": "string", "examples": [HOCR_EXAMPLE]},
    tsv.MEDIA_TYPE: {"type": "string", "examples": [TSV_EXAMPLE]},
    alto.MEDIA_TYPE: {"type": "string", "examples": [ALTO_EXAMPLE]},
    PDF_MEDIA_TYPE: {"type": "string", "format": "binary"},
}
# (description, code, example message) of answers both APIs give.
DATABASE_DOWN = (
    "the database is unavailable",
    "database_unavailable",
    "the database is unavailable; nothing was stored, retry shortly",
)
KEY_REFUSED = ("API keys are on and the key is missing or wrong", "missing_api_key", KEY_MISSING)
OCR_DOWN = "the OCR server at http://ocr:5001 is not answering (ConnectError); retry shortly"
UNAVAILABLE = problem(503, *DATABASE_DOWN)
NO_SUCH_JOB = problem(404, "no such job", "job_not_found", f"no job with id {EXAMPLE_JOB_ID}")
# Every v1 operation, when API keys are on.
KEY_ERRORS = {401: problem(401, *KEY_REFUSED)}
SUBMIT_ERRORS = {
    400: problem(
        400,
        "bad document or option (the problem's field names it)",
        "invalid_option",
        PSM_DETAIL,
    ),
    **KEY_ERRORS,
    413: problem(
        413,
        "the document is over a limit: bytes, pixels or OCR_MAX_PAGES",
        "too_many_pages",
        "the document has 140 pages to read, more than the 100 allowed per document "
        "(OCR_MAX_PAGES); select fewer with pages=, e.g. pages=1-100",
    ),
    415: problem(
        415,
        "the body is not multipart, JSON or an image/PDF",
        "unsupported_media_type",
        "a body of type 'text/csv' is not read here: send multipart/form-data with a file part, "
        'the raw document as image/* or application/pdf, or application/json with {"document": '
        '"<base64>"}',
    ),
    503: problem(
        503,
        "the database or the OCR server is unavailable; retry after Retry-After",
        "ocr_unavailable",
        OCR_DOWN,
    ),
}


# -- what the original API's views document ---------------------------------------------------


def compat_error(description: str, code: str, message: str) -> Body:
    """An error answer of the original API, with an example of it."""
    example = {"error": {"code": code, "message": message}}
    return Body(
        description, {"application/json": CompatError}, examples={"application/json": example}
    )


IMAGE_BODY = Body("base64 image(s)", {"application/json": CompatImage})
COMPAT_UNAVAILABLE = compat_error(*DATABASE_DOWN)
# Every operation of the original API, when API keys are on.
COMPAT_KEY_ERRORS = {401: compat_error(*KEY_REFUSED)}
UPLOAD_ERRORS = {
    400: compat_error(
        "malformed body, base64 or image", "invalid_base64", '"image_data" is not valid base64'
    ),
    **COMPAT_KEY_ERRORS,
    413: compat_error(
        "an image is over OCR_MAX_UPLOAD_BYTES or OCR_MAX_PIXELS, or the list over OCR_MAX_BATCH",
        "too_many_pixels",
        "page 1 is 10000x6000 = 60000000 pixels, more than the 50000000 allowed "
        "(OCR_MAX_PIXELS); scale it down",
    ),
    503: compat_error(
        "the database (or OCR server) is unavailable; nothing was stored",
        "ocr_unavailable",
        OCR_DOWN,
    ),
}
