"""The original API, exactly as its clients use it: /image-sync, /image, /allimages, with
their habits (JSON without a Content-Type, on GET too; trailing slashes; the id in the query
string; data: URLs and line breaks in base64; a list of images)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from flask import Blueprint, Response, jsonify

from ocr_common import job_store
from ocr_common.errors import NotFound, OcrError
from ocr_common.models import JobStatus

from . import jobs, schemas
from .access import check_queue_room, current_owner
from .openapi import Body, Operation, Param
from .services import current_services
from .uploads import read_task_id, read_uploads

bp = Blueprint("compat", __name__)
# Jobs per database read while /allimages streams.
LIST_PAGE = 1000


@bp.route("/image-sync", methods=["POST"], strict_slashes=False)
@Operation(
    summary="OCR an image now (original API)",
    request=schemas.IMAGE_BODY,
    responses={
        200: Body("the text (a list for a list)", {"application/json": schemas.CompatText}),
        **schemas.UPLOAD_ERRORS,
        422: schemas.compat_error(
            "Tesseract could not read the image",
            "engine_timeout",
            "Tesseract gave up on page 1 after 120 s (OCR_PAGE_TIMEOUT_S)",
        ),
    },
)
def image_sync() -> Response:
    """OCR now: {"image_data": b64} -> {"text": text}; a list in gives a list out."""
    uploads, many = read_uploads()
    started = job_store.utcnow()
    outcomes = jobs.reuse_or_read(uploads)
    jobs.record_reads(uploads, outcomes, started_at=started)
    texts = [outcome.text for outcome in outcomes if not isinstance(outcome, OcrError)]
    return jsonify({"text": texts if many else texts[0]})


@bp.route("/image", methods=["POST"], strict_slashes=False)
@Operation(
    summary="Queue an image (original API)",
    request=schemas.IMAGE_BODY,
    responses={
        200: Body("the task id (a list for a list)", {"application/json": schemas.CompatTaskId}),
        **schemas.UPLOAD_ERRORS,
    },
)
def image_submit() -> Response:
    """Queue OCR: {"image_data": b64} -> {"task_id": id}; committed before we answer."""
    svc = current_services()
    uploads, many = read_uploads()
    check_queue_room(len(uploads))
    # An image read before is answered from its stored result by the OCR server when it
    # claims the job (see Dispatcher), so intake stays one INSERT.
    ids = [job.id for job in jobs.queue_jobs(uploads)]
    svc.ocr.notify()
    return jsonify({"task_id": ids if many else ids[0]})


@bp.route("/image", methods=["GET"], strict_slashes=False)
@Operation(
    summary="The text of a task (original API)",
    description='The id comes as ?task_id=, ?id= or a JSON body {"task_id": "<id>"}.',
    params=(
        Param("task_id", {"type": "string"}, "the task id", example=schemas.EXAMPLE_JOB_ID),
        Param("id", {"type": "string"}, "the task id (another name)"),
    ),
    responses={
        200: Body("the text, or null while not done", {"application/json": schemas.CompatResult}),
        400: schemas.compat_error(
            "no task id, or one that is an object or a list",
            "missing_field",
            'say which task: send {"task_id": "<id>"} as the body, or ?task_id=<id>',
        ),
        **schemas.COMPAT_KEY_ERRORS,
        404: schemas.compat_error(
            "no such task, whatever the id looks like",
            "task_not_found",
            "no task with id 'unknown'",
        ),
        422: schemas.compat_error(
            "the task failed",
            "attempts_exhausted",
            "gave up after the last allowed attempt (OCR_MAX_ATTEMPTS): the OCR worker stopped "
            "answering every time it read this image",
        ),
        503: schemas.COMPAT_UNAVAILABLE,
    },
)
def image_result() -> Response:
    """{"task_id": id} -> {"task_id": text}, or {"task_id": null} while it is not done yet;
    with the id in the query string also ``text`` (the body form's clients compare the dict)."""
    given, in_query = read_task_id()
    job_id = jobs.canonical_job_id(given)
    job = jobs.find_job(job_id) if job_id is not None else None
    if job is None:
        # Whatever its shape: clients test "unknown id -> 404" with made-up ids.
        raise NotFound(f"no task with id {given[: jobs.SHOWN_ID_CHARS]!r}", code="task_not_found")
    if (failure := job.failure(noun="task")) is not None:
        raise failure
    text = job.text if job.status == JobStatus.SUCCEEDED else None
    return jsonify({"task_id": text, "text": text} if in_query else {"task_id": text})


@bp.route("/allimages", methods=["GET"], strict_slashes=False)
@Operation(
    summary="Every task and its text (original API)",
    responses={
        200: Body(
            "task id -> text (null while not done)", {"application/json": schemas.CompatAllImages}
        ),
        **schemas.COMPAT_KEY_ERRORS,
        503: schemas.COMPAT_UNAVAILABLE,
    },
)
def all_images() -> Response:
    """Every task and its text so far (null while not done), oldest first: streamed a page of
    jobs at a time, each read in a short transaction, so no lock waits for a slow client."""
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
