"""The original API, exactly as its clients use it: /image-sync, /image, /allimages.

Wire habits of real clients are accepted: JSON without (or with the wrong) Content-Type, on GET
too; trailing slashes; the id in the query string; data: URL prefixes and line breaks in base64;
a list of images, in "image_data" or "image_data_list".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.errors import (
    BadRequest,
    JobFailed,
    NotFound,
    OcrError,
    PayloadTooLarge,
    Unavailable,
)
from ocr_common.models import JobStatus
from ocr_common.observability import current_request_id

from . import schemas
from .access import check_queue_room, current_owner
from .openapi import Body, Param, operation
from .services import Services, current_services
from .uploads import decode_base64, parse_json_object, read_body, request_json, validate_image

bp = Blueprint("compat", __name__)
# The keys a list of images may come in; with both, the first wins.
IMAGE_KEYS = ("image_data", "image_data_list")
# The most of an unknown task id echoed back in a message.
SHOWN_ID_CHARS = 64
# Jobs per database read while /allimages streams.
LIST_PAGE = 1000


View = Callable[..., Response]


def route(path: str, **options: Any) -> Callable[[View], View]:
    """Register ``path`` with and without a trailing slash: no redirect, so bodies survive."""

    def decorator(view: View) -> View:
        bp.add_url_rule(path, view_func=view, **options)
        bp.add_url_rule(path + "/", view_func=view, endpoint=view.__name__ + "_slash", **options)
        return view

    return decorator


def _error(description: str) -> Body:
    return Body(description, {"application/json": schemas.CompatError})


IMAGE_BODY = Body("base64 image(s)", {"application/json": schemas.CompatImage})
UPLOAD_ERRORS = {
    400: _error("malformed body, base64 or image"),
    413: _error(
        "an image is over OCR_MAX_UPLOAD_BYTES or OCR_MAX_PIXELS, or the list over OCR_MAX_BATCH"
    ),
    503: _error("the database (or OCR server) is unavailable; nothing was stored"),
}


@dataclass(frozen=True)
class Upload:
    data: bytes
    digest: str


def images_in_body(body: dict[str, Any]) -> tuple[object, bool] | None:
    """The images of an upload body and whether they came as a list; None without any."""
    for key in IMAGE_KEYS:
        if key in body:
            value = body[key]
            if key == "image_data_list" and not isinstance(value, list):
                value = [value]
            return value, isinstance(value, list)
    return None


def read_uploads() -> tuple[list[Upload], bool]:
    """The images of an upload body, and whether the client sent a list."""
    svc = current_services()
    found = images_in_body(request_json())
    if found is None:
        raise BadRequest(
            'the JSON body has no "image_data": send {"image_data": "<base64>"}',
            code="missing_field",
        )
    value, many = found
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadRequest('"image_data" is an empty list', code="invalid_field")
    limits = svc.settings
    if len(items) > limits.max_images_per_request:
        raise PayloadTooLarge(
            f"{len(items)} images in one request; at most {limits.max_images_per_request} "
            "(OCR_MAX_BATCH, and never more than the rate limit allows at once): send them "
            "in several requests",
            code="batch_too_large",
        )
    uploads = []
    for index, item in enumerate(items):
        field = f"image_data[{index}]" if many else "image_data"
        try:
            data = decode_base64(item, field=field, max_bytes=limits.max_upload_bytes)
            validate_image(data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
        except OcrError as exc:
            if many and not exc.message.startswith(field):
                exc.message = f"{field}: {exc.message}"
            raise
        uploads.append(Upload(data, job_store.image_digest(data)))
    return uploads, many


def known_results(session: Session, svc: Services, uploads: list[Upload]) -> list[str | None]:
    """For each upload, the text of the same image read before (when reuse is on)."""
    if not svc.settings.reuse_results:
        return [None] * len(uploads)
    return [
        job_store.find_result(session, digest=upload.digest, owner=current_owner())
        for upload in uploads
    ]


@route("/image-sync", methods=["POST"])
@operation(
    summary="OCR an image now (original API)",
    tag="original",
    request=IMAGE_BODY,
    responses={
        200: Body("the text (a list for a list)", {"application/json": schemas.CompatText}),
        **UPLOAD_ERRORS,
        422: _error("Tesseract could not read the image"),
    },
)
def image_sync() -> Response:
    """OCR now: {"image_data": b64} -> {"text": text}; a list in gives a list out."""
    svc = current_services()
    uploads, many = read_uploads()
    started = job_store.utcnow()
    with svc.sessions() as session:
        results: list[str | OcrError | None] = list(known_results(session, svc, uploads))
    unknown = [index for index, result in enumerate(results) if result is None]
    if unknown:
        read = svc.ocr.recognize_many([uploads[index].data for index in unknown])
        for index, outcome in zip(unknown, read, strict=True):
            if isinstance(outcome, Unavailable):
                raise outcome
            results[index] = outcome
    with svc.sessions.begin() as session:
        for upload, result in zip(uploads, results, strict=True):
            failed = result if isinstance(result, OcrError) else None
            job_store.record_finished(
                session,
                image=upload.data,
                digest=upload.digest,
                started_at=started,
                text=None if failed else str(result),
                error_code=failed.code if failed else None,
                error_message=failed.message if failed else None,
                owner=current_owner(),
            )
    for result in results:
        if isinstance(result, OcrError):
            raise result
    texts = [str(text) for text in results]
    return jsonify({"text": texts if many else texts[0]})


@route("/image", methods=["POST"])
@operation(
    summary="Queue an image (original API)",
    tag="original",
    request=IMAGE_BODY,
    responses={
        200: Body("the task id (a list for a list)", {"application/json": schemas.CompatTaskId}),
        **UPLOAD_ERRORS,
    },
)
def image_submit() -> Response:
    """Queue OCR: {"image_data": b64} -> {"task_id": id}; committed before we answer."""
    svc = current_services()
    uploads, many = read_uploads()
    check_queue_room(len(uploads))
    # An image read before is answered from its stored result by the OCR server when it
    # claims the job (see Dispatcher), so intake stays one INSERT per table.
    with svc.sessions.begin() as session:
        ids = [
            job_store.create_job(
                session,
                image=upload.data,
                digest=upload.digest,
                max_attempts=svc.settings.max_attempts,
                owner=current_owner(),
                request_id=current_request_id(),
            ).id
            for upload in uploads
        ]
    svc.ocr.notify()
    return jsonify({"task_id": ids if many else ids[0]})


@route("/image", methods=["GET"])
@operation(
    summary="The text of a task (original API)",
    tag="original",
    description='The id comes as ?task_id=, ?id= or a JSON body {"task_id": "<id>"}.',
    params=(
        Param("task_id", {"type": "string"}, "the task id"),
        Param("id", {"type": "string"}, "the task id (another name)"),
    ),
    responses={
        200: Body("the text, or null while not done", {"application/json": schemas.CompatResult}),
        400: _error("no task id, or one that is an object or a list"),
        404: _error("no such task, whatever the id looks like"),
        422: _error("the task failed"),
        503: _error("the database is unavailable"),
    },
)
def image_result() -> Response:
    """{"task_id": id} -> {"task_id": text}, or {"task_id": null} while it is not done yet.

    With the id in the query string the answer also says ``text``: clients of that form read
    it. The body form answers exactly ``{"task_id": ...}``: its clients compare the dict.
    """
    given, in_query = read_task_id()
    job_id = canonical_task_id(given)
    job = None
    if job_id is not None:
        with current_services().sessions() as session:
            job = job_store.get_job(session, job_id, owner=current_owner())
    if job is None:
        # Whatever its shape: clients test "unknown id -> 404" with made-up ids.
        raise NotFound(f"no task with id {given[:SHOWN_ID_CHARS]!r}", code="task_not_found")
    if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
        raise JobFailed(
            f"task {job_id} {job.status.value}: {job.error_message or 'no reason recorded'}",
            code=job.error_code or f"job_{job.status.value}",
        )
    text = job.text if job.status == JobStatus.SUCCEEDED else None
    return jsonify({"task_id": text, "text": text} if in_query else {"task_id": text})


def read_task_id() -> tuple[str, bool]:
    """The task id as the client sent it, and whether it came in the query string."""
    value: object = request.args.get("task_id") or request.args.get("id")
    in_query = value is not None
    if value is None:
        body = read_body()
        if not body.strip():
            raise BadRequest(
                'say which task: send {"task_id": "<id>"} as the body, or ?task_id=<id>',
                code="missing_field",
            )
        data = parse_json_object(body)
        value = data.get("task_id", data.get("id"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = json.dumps(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRequest('the JSON body has no "task_id"', code="missing_field")
    if not isinstance(value, str):
        raise BadRequest(
            f'"task_id" must be a string, not {type(value).__name__}', code="invalid_task_id"
        )
    return value.strip(), in_query


def canonical_task_id(value: str) -> str | None:
    """The id as stored (a lower-case UUID), or None when no task can have it."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


@route("/allimages", methods=["GET"])
@operation(
    summary="Every task and its text (original API)",
    tag="original",
    responses={
        200: Body(
            "task id -> text (null while not done)", {"application/json": schemas.CompatAllImages}
        ),
        503: _error("the database is unavailable"),
    },
)
def all_images() -> Response:
    """Every task and its text so far (null while not done), oldest first.

    Streamed a page of jobs at a time, each read in a short transaction of its own: the API's
    memory does not grow with the number of jobs, and no connection or lock is held while a
    slow client reads.
    """
    owner = current_owner()
    sessions = current_services().sessions

    def read_page(after: tuple[datetime, str] | None) -> list[tuple[str, str | None, datetime]]:
        with sessions() as session:
            return job_store.results_page(session, owner=owner, after=after, limit=LIST_PAGE)

    # Read before any byte is sent: a database that is down is still a 503, not a broken 200.
    first = read_page(None)

    def generate() -> Iterator[str]:
        page, separator = first, ""
        yield "{"
        while page:
            for job_id, text, _created in page:
                yield f"{separator}{json.dumps(job_id)}:{json.dumps(text)}"
                separator = ","
            if len(page) < LIST_PAGE:
                break
            _, _, created = page[-1]
            page = read_page((created, page[-1][0]))
        yield "}\n"

    return Response(generate(), mimetype="application/json")
