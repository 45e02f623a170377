"""The v1 API: documents (images, multi-page TIFFs, PDFs), options, rich results and jobs.

A document comes as multipart ``file``, as a raw body with an image or PDF content type, or as
JSON ``{"document": "<base64>"}``; options come as query parameters, form fields or JSON keys.
Everything is checked before anything is stored. Errors are problem+json (``errors.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from ocr_common import job_store
from ocr_common.documents import Document, check_document
from ocr_common.errors import (
    BadRequest,
    Conflict,
    EngineError,
    JobFailed,
    NotFound,
    UnsupportedMediaType,
)
from ocr_common.models import Job, JobStatus
from ocr_common.observability import current_request_id
from ocr_common.options import OPTION_FIELDS, PSM_MODES, OcrOptions, is_decimal, parse_options
from ocr_common.results import public_result, to_hocr, to_tsv

from . import schemas
from .access import check_queue_room, current_owner
from .openapi import PROBLEM_JSON, Body, Param, operation
from .services import current_services
from .uploads import decode_base64, parse_json_object, read_body

bp = Blueprint("v1", __name__, url_prefix="/v1")

FORMATS = ("json", "text", "hocr", "tsv")
RAW_MEDIA_TYPES = ("application/pdf", "application/octet-stream")
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
HOCR_MEDIA_TYPE = "application/xhtml+xml"


# -- reading a submission -------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    data: bytes
    options: OcrOptions
    document: Document

    @property
    def digest(self) -> str:
        """Same document and same options: the same request, however it was sent."""
        return hashlib.sha256(
            job_store.image_digest(self.data).encode() + self.options.to_json().encode()
        ).hexdigest()


def _values(*sources: Mapping[str, Any], extra: tuple[str, ...]) -> dict[str, Any]:
    """Options from every source (later ones win); an unknown name is a 400, not ignored."""
    allowed = set(OPTION_FIELDS) | set(extra)
    values: dict[str, Any] = {}
    for source in sources:
        for key in source:
            if key not in allowed:
                # str(): a multipart part without a name arrives with the key None.
                name = str(key)[:40]
                raise BadRequest(
                    f'"{name}" is not an option; the options are ' + ", ".join(OPTION_FIELDS),
                    code="unknown_option",
                    field=name,
                )
            values[key] = source[key]
    return values


def _read_document_and_values(extra: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
    max_bytes = current_services().settings.max_upload_bytes
    mimetype = request.mimetype
    query = request.args.to_dict()
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest(
                'the multipart body has no "file" part: send the document as file=@page.pdf',
                code="missing_field",
                field="file",
            )
        data = upload.read(max_bytes + 1)
        form = request.form.to_dict()
        return data, _values(query, form, extra=extra)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        body = parse_json_object(read_body())
        if "document" not in body:
            raise BadRequest(
                'the JSON body has no "document": send {"document": "<base64>"}',
                code="missing_field",
                field="document",
            )
        data = decode_base64(body.pop("document"), field="document", max_bytes=max_bytes)
        return data, _values(query, body, extra=extra)
    if mimetype.startswith("image/") or mimetype in RAW_MEDIA_TYPES:
        return read_body(), _values(query, extra=extra)
    raise UnsupportedMediaType(
        f"a body of type {mimetype or '(none)'!r} is not read here: send multipart/form-data "
        "with a file part, the raw document as image/* or application/pdf, or "
        'application/json with {"document": "<base64>"}'
    )


def read_submission(extra: tuple[str, ...] = ()) -> tuple[Submission, dict[str, Any]]:
    """The document and options of a POST, checked; and the other ``extra`` values sent."""
    svc = current_services()
    settings = svc.settings
    data, values = _read_document_and_values(extra)
    options = parse_options(values, languages=svc.languages, max_pages=settings.max_pages)
    document = check_document(
        data,
        wanted_pages=options.pages,
        dpi=options.render_dpi(settings.default_dpi),
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_pages=settings.max_pages,
    )
    return Submission(data, options, document), {k: values[k] for k in extra if k in values}


def result_format(values: Mapping[str, Any]) -> str:
    value = str(values.get("format") or "json").lower()
    if value not in FORMATS:
        raise BadRequest(
            f'"format": {value[:20]!r} is not one of ' + ", ".join(FORMATS),
            code="invalid_option",
            field="format",
        )
    return value


# -- answering a job ------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


def job_summary(job: Job) -> dict[str, Any]:
    error = None
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        error = {
            "code": job.error_code or f"job_{job.status.value}",
            "message": job.error_message or f"the job was {job.status.value}",
        }
    progress = None
    if job.pages_total is not None:
        progress = {"pages_done": job.pages_done or 0, "pages_total": job.pages_total}
    return {
        "id": job.id,
        "status": job.status.value,
        "kind": job.kind,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "format": job.format,
        "options": job.options.to_dict() if job.options is not None else None,
        "progress": progress,
        "error": error,
    }


def job_body(job: Job, result: dict[str, Any] | None) -> dict[str, Any]:
    done = job.status == JobStatus.SUCCEEDED
    return {
        **job_summary(job),
        "text": job.text if done else None,
        "pages": public_result(result)["pages"] if done and result is not None else None,
    }


def render_job(job: Job, result: dict[str, Any] | None, fmt: str, status: int = 200) -> Response:
    """The job in the asked ``format``: the JSON job, or its text, hOCR or TSV."""
    if fmt == "json":
        response = jsonify(job_body(job, result))
        response.status_code = status
        return response
    if job.status != JobStatus.SUCCEEDED:
        if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
            raise JobFailed(
                f"job {job.id} {job.status.value}: {job.error_message or 'no reason recorded'}",
                code=job.error_code or f"job_{job.status.value}",
            )
        raise Conflict(
            f"job {job.id} is {job.status.value}: its {fmt} is there once it has succeeded",
            code="result_not_ready",
        )
    if fmt == "text":
        return Response(job.text or "", mimetype="text/plain")
    if result is None:
        raise Conflict(
            f"job {job.id} came through the original API, which keeps only the text: "
            "ask for format=text or json",
            code="format_unavailable",
        )
    if fmt == "hocr":
        return Response(to_hocr(result), mimetype=HOCR_MEDIA_TYPE)
    return Response(to_tsv(result), mimetype="text/tab-separated-values")


def parse_job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(
            f"no job with id {value[:64]!r} (job ids are UUIDs)", code="job_not_found"
        ) from None


def load_job(job_id: str) -> Job:
    with current_services().sessions() as session:
        job = job_store.get_job(session, parse_job_id(job_id), owner=current_owner())
    if job is None:
        raise NotFound(f"no job with id {job_id}", code="job_not_found")
    return job


# -- OpenAPI pieces -------------------------------------------------------------------------

OPTION_PARAMS = (
    Param(
        "psm",
        {"type": "integer", "enum": sorted(PSM_MODES)},
        "page segmentation mode (3: automatic; 6: one block; 7: one line; 11: sparse text)",
    ),
    Param("char_whitelist", {"type": "string"}, "read only these characters"),
    Param("char_blacklist", {"type": "string"}, "never read these characters"),
    Param("dpi", {"type": "integer"}, "resolution PDF pages are rendered at (default 300)"),
    Param("pages", {"type": "string"}, 'pages of a PDF or TIFF to read, e.g. "1-3,7"'),
    Param(
        "preprocess",
        {"type": "string", "enum": ["none", "auto"]},
        "auto: EXIF orientation, grayscale, sideways or upside-down pages turned upright "
        "(verified by reading), small text in grey images enlarged where it reads better",
    ),
    Param("lang", {"type": "string"}, "installed language(s), e.g. eng (the default)"),
)
FORMAT_PARAM = Param(
    "format", {"type": "string", "enum": list(FORMATS)}, "json (default), text, hocr or tsv"
)
_BINARY = {"type": "string", "format": "binary"}
_MULTIPART = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": _BINARY,
        **{p.name: p.schema for p in OPTION_PARAMS},
    },
}
DOCUMENT_BODY = Body(
    "the document: PNG, JPEG, TIFF (every page), BMP, GIF (first frame), WebP or PDF; the "
    "format is found from the bytes",
    {
        "multipart/form-data": _MULTIPART,
        "application/json": schemas.JsonDocument,
        "application/pdf": _BINARY,
        "image/png": _BINARY,
        "image/jpeg": _BINARY,
        "image/tiff": _BINARY,
        "application/octet-stream": _BINARY,
    },
)


def problem(description: str) -> Body:
    return Body(description, {PROBLEM_JSON: schemas.Problem})


RESULT_CONTENT: dict[str, type[BaseModel] | dict[str, Any]] = {
    "application/json": schemas.Job,
    "text/plain": {"type": "string"},
    HOCR_MEDIA_TYPE: {"type": "string"},
    "text/tab-separated-values": {"type": "string"},
}
SUBMIT_ERRORS = {
    400: problem("bad document or option (the problem's field names it)"),
    413: problem("the document is over a limit: bytes, pixels or OCR_MAX_PAGES"),
    415: problem("the body is not multipart, JSON or an image/PDF"),
    503: problem("the database or the OCR server is unavailable; retry after Retry-After"),
}

# -- endpoints ------------------------------------------------------------------------------


@bp.post("/ocr")
@operation(
    summary="Read a document now",
    tag="v1",
    description="Synchronous: the pages are read in parallel, and the job (recorded like any "
    "other) comes back with its text, pages, lines and words.",
    params=(*OPTION_PARAMS, FORMAT_PARAM),
    request=DOCUMENT_BODY,
    responses={
        200: Body("the finished job, or its text, hOCR or TSV (format=)", RESULT_CONTENT),
        **SUBMIT_ERRORS,
        422: problem("Tesseract could not read the document"),
    },
)
def ocr_now() -> Response:
    svc = current_services()
    submission, extra = read_submission(extra=("format",))
    fmt = result_format(extra)
    started = job_store.utcnow()
    result: dict[str, Any] | None = None
    failed: EngineError | None = None
    try:
        result = svc.ocr.recognize_document(
            submission.data, submission.options, pages=len(submission.document.pages)
        )
    except EngineError as exc:
        # Recorded as a failed job, like any other; an unavailable OCR server stores nothing.
        failed = exc
    with svc.sessions.begin() as session:
        job = job_store.record_finished(
            session,
            image=submission.data,
            started_at=started,
            text=str(result["text"]) if result else None,
            error_code=failed.code if failed else None,
            error_message=failed.message if failed else None,
            options=submission.options,
            fmt=submission.document.format,
            pages_total=len(submission.document.pages),
            result={"text": result["text"], "pages": result["pages"]} if result else None,
            owner=current_owner(),
        )
    if failed is not None:
        raise failed
    return render_job(job, result, fmt)


@bp.post("/jobs")
@operation(
    summary="Queue a document",
    tag="v1",
    description="Asynchronous: 202 once the job is stored, with Location: /v1/jobs/{id}. With "
    "an Idempotency-Key, the same key and document return the same job; the same key with "
    "another document is a 409.",
    params=(
        *OPTION_PARAMS,
        Param(
            IDEMPOTENCY_HEADER,
            {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
            "a key of your choice that makes retrying this POST safe",
            where="header",
        ),
    ),
    request=DOCUMENT_BODY,
    responses={
        202: Body(
            "the queued job (or, for a repeated Idempotency-Key, the job it created)",
            {"application/json": schemas.Job},
            headers={"Location": "/v1/jobs/{id}"},
        ),
        **SUBMIT_ERRORS,
        409: problem("the Idempotency-Key was used for another request"),
    },
)
def submit_job() -> Response:
    svc = current_services()
    key = stored_idempotency_key(idempotency_key())
    submission, _ = read_submission()
    digest = submission.digest
    if key is not None:
        with svc.sessions() as session:
            existing = job_store.find_by_idempotency_key(session, key)
        if existing is not None:
            return replay(existing, digest)
    check_queue_room(1)
    try:
        with svc.sessions.begin() as session:
            job = job_store.create_job(
                session,
                image=submission.data,
                max_attempts=svc.settings.max_attempts,
                options=submission.options,
                fmt=submission.document.format,
                pages_total=len(submission.document.pages),
                idempotency_key=key,
                request_digest=digest,
                owner=current_owner(),
                request_id=current_request_id(),
            )
    except IntegrityError:
        # Another request with the same key won the race: answer what it created.
        with svc.sessions() as session:
            existing = job_store.find_by_idempotency_key(session, key or "")
        if key is None or existing is None:
            raise
        return replay(existing, digest)
    svc.ocr.notify()
    return accepted(job)


def accepted(job: Job, replayed: bool = False) -> Response:
    response = jsonify(job_body(job, None))
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def replay(job: Job, digest: str) -> Response:
    if job.request_sha256 != digest:
        raise Conflict(
            f"the {IDEMPOTENCY_HEADER} was already used for a different request (job "
            f"{job.id}); use a new key for a new document or options",
            code="idempotency_key_reused",
            field=IDEMPOTENCY_HEADER,
        )
    with current_services().sessions() as session:
        current = job_store.get_job(session, job.id) or job
    return accepted(current, replayed=True)


def stored_idempotency_key(key: str | None) -> str | None:
    """Keys belong to their caller: with API keys on, two owners may use the same one."""
    owner = current_owner()
    if key is None or owner is None:
        return key
    return "owner:" + hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()


def idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
            code="invalid_idempotency_key",
            field=IDEMPOTENCY_HEADER,
        )
    return key


@bp.get("/jobs/<job_id>")
@operation(
    summary="A job: its status, progress, and result",
    tag="v1",
    params=(FORMAT_PARAM,),
    responses={
        200: Body("the job, or its text, hOCR or TSV (format=)", RESULT_CONTENT),
        400: problem("bad format"),
        404: problem("no such job"),
        409: problem("format=text|hocr|tsv of a job not finished yet"),
        422: problem("format=text|hocr|tsv of a failed or canceled job"),
        503: problem("the database is unavailable"),
    },
)
def get_job(job_id: str) -> Response:
    fmt = result_format(request.args)
    job = load_job(job_id)
    result = None
    if job.status == JobStatus.SUCCEEDED and job.options is not None:
        with current_services().sessions() as session:
            result = job_store.get_result(session, job.id)
    return render_job(job, result, fmt)


@bp.delete("/jobs/<job_id>")
@operation(
    summary="Cancel a job, or delete a finished one",
    tag="v1",
    description="A queued (or running) job is canceled: 200 with the canceled job; it will not "
    "run, or its result is discarded. A finished job is deleted with its result and image: 204.",
    responses={
        200: Body("the canceled job", {"application/json": schemas.Job}),
        204: Body("deleted"),
        404: problem("no such job"),
        503: problem("the database is unavailable"),
    },
)
def delete_job(job_id: str) -> Response:
    job = load_job(job_id)
    with current_services().sessions.begin() as session:
        if job_store.cancel(session, job.id):
            canceled = job_store.get_job(session, job.id)
            assert canceled is not None
            return jsonify(job_body(canceled, None))
        if not job_store.delete_finished(session, job.id):
            raise NotFound(f"no job with id {job_id}", code="job_not_found")
    return Response(status=204)


@bp.get("/jobs")
@operation(
    summary="Jobs, newest first",
    tag="v1",
    params=(
        Param("status", {"type": "string", "enum": [s.value for s in JobStatus]}),
        Param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            f"jobs per page (default {DEFAULT_PAGE_SIZE})",
        ),
        Param("cursor", {"type": "string"}, "next_cursor of the page before"),
    ),
    responses={
        200: Body("a page of jobs", {"application/json": schemas.JobList}),
        400: problem("bad status, limit or cursor"),
        503: problem("the database is unavailable"),
    },
)
def list_jobs() -> Response:
    status = _status_filter(request.args.get("status"))
    limit = _limit(request.args.get("limit"))
    before = _decode_cursor(request.args.get("cursor"))
    with current_services().sessions() as session:
        jobs = job_store.list_recent(
            session, limit=limit + 1, status=status, before=before, owner=current_owner()
        )
    more = len(jobs) > limit
    jobs = jobs[:limit]
    cursor = _encode_cursor(jobs[-1]) if more and jobs else None
    return jsonify({"jobs": [job_summary(job) for job in jobs], "next_cursor": cursor})


def _status_filter(value: str | None) -> JobStatus | None:
    if value in (None, ""):
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise BadRequest(
            f'"status": {value[:20]!r} is not one of ' + ", ".join(s.value for s in JobStatus),
            code="invalid_option",
            field="status",
        ) from None


def _limit(value: str | None) -> int:
    if value in (None, ""):
        return DEFAULT_PAGE_SIZE
    if not is_decimal(value) or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise BadRequest(
            f'"limit": must be an integer from 1 to {MAX_PAGE_SIZE}',
            code="invalid_option",
            field="limit",
        )
    return int(value)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str | None) -> tuple[datetime, str] | None:
    if value in (None, ""):
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        created, job_id = raw.split("|")
        return datetime.fromisoformat(created), str(uuid.UUID(job_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            '"cursor": not a cursor this API gave; pass next_cursor as it came',
            code="invalid_option",
            field="cursor",
        ) from None
