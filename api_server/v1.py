"""The v1 API's routes: documents (images, multi-page TIFFs, PDFs), options, rich results and
jobs. Each view parses (``uploads``, ``pagination``, ``idempotency``), stores or calls
(``jobs``), and renders (``rendering``); errors are schemas.problem+json (``errors.py``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.db import in_transaction
from ocr_common.errors import BadRequest, Conflict, NotFound, OcrError
from ocr_common.models import Job, JobApi, JobStatus, WebhookDelivery
from ocr_common.options import DEFAULT_LANG
from ocr_common.render.page_image import MAX_SIDE_PX, PNG_MEDIA_TYPE, WEBP_MEDIA_TYPE, page_preview
from ocr_common.webhooks import WEBHOOK_URL_FIELD, check_webhook_url

from . import idempotency, jobs, rendering, schemas
from .access import check_queue_room, current_owner
from .fleet import current_fleet
from .openapi import WEBHOOKS_EXTENSION, Body, Operation
from .pagination import decode_cursor, next_cursor, page_size, status_filter
from .rendering import job_body, job_summary, render_accepted, render_job, result_format
from .services import current_services
from .uploads import read_submission

bp = Blueprint("v1", __name__, url_prefix="/v1")
JOB_ENDED = Operation(
    summary="A job ended",
    description="POSTed to the job's webhook_url when it succeeds, fails or is canceled; "
    "tried again on OCR_WEBHOOK_RETRY_SCHEDULE until the receiver answers 2xx. Verify the "
    "signature (Standard Webhooks) before trusting it; the same webhook-id may come twice.",
    params=schemas.WEBHOOK_HEADERS,
    request=Body("the event", {"application/json": schemas.WebhookEvent}),
    responses={200: Body("any 2xx: received")},
)
bp.record_once(
    lambda state: state.app.extensions.setdefault(WEBHOOKS_EXTENSION, {}).update(jobEnded=JOB_ENDED)
)


@bp.post("/ocr")
@Operation(
    summary="Read a document now",
    description="Synchronous: the pages are read in parallel, and the job (recorded like any "
    "other) comes back with its text, pages, lines and words.",
    params=(*schemas.OPTION_PARAMS, schemas.FORMAT_PARAM),
    request=schemas.DOCUMENT_BODY,
    responses={
        200: Body(
            "the finished job, or its text, hOCR, TSV or searchable PDF (format=)",
            schemas.RESULT_CONTENT,
        ),
        **schemas.SUBMIT_ERRORS,
        422: schemas.problem(
            422,
            "Tesseract could not read the document",
            "engine_timeout",
            "Tesseract gave up on page 1 after 120 s (OCR_PAGE_TIMEOUT_S)",
        ),
    },
)
def ocr_now() -> Response:
    submission, extra = read_submission(extra=("format",))
    fmt = result_format(extra, request.accept_mimetypes)
    started = job_store.utcnow()
    [outcome] = jobs.reuse_or_read([submission])
    # The job is recorded as on the original API: a result or an engine failure (raised).
    [job] = jobs.record_reads([submission], [outcome], started_at=started, api=JobApi.V1)
    assert not isinstance(outcome, OcrError)
    return render_job(job, outcome.pages, fmt, document=lambda: submission.data)


@bp.post("/jobs")
@Operation(
    summary="Queue a document",
    description="Asynchronous: 202 once the job is stored, with Location: /v1/jobs/{id}. With "
    "an Idempotency-Key, the same key and document return the same job; the same key with "
    "another document is a 409.",
    params=(*schemas.JOB_PARAMS, schemas.IDEMPOTENCY_PARAM),
    request=schemas.JOB_DOCUMENT_BODY,
    responses={
        202: Body(
            "the queued job (or, for a repeated Idempotency-Key, the job it created)",
            {"application/json": schemas.Job},
            headers={"Location": "/v1/jobs/{id}"},
            examples={"application/json": schemas.QUEUED_FULL_JOB_EXAMPLE},
        ),
        **schemas.SUBMIT_ERRORS,
        409: schemas.problem(
            409,
            "the Idempotency-Key was used for another request",
            "idempotency_key_reused",
            f"the Idempotency-Key was already used for a different request (job "
            f"{schemas.EXAMPLE_JOB_ID}); use a new key for a new document or options",
        ),
    },
)
def submit_job() -> Response:
    svc = current_services()
    key = idempotency.requested_key()
    submission, extra = read_submission(extra=(WEBHOOK_URL_FIELD,))
    webhook_url = read_webhook_url(extra)
    digest = submission.digest
    if webhook_url is not None:
        # Another receiver makes it another request.
        digest = hashlib.sha256(f"{digest}\n{webhook_url}".encode()).hexdigest()
    if (earlier := idempotency.earlier_job(key, digest)) is not None:
        return render_accepted(earlier, replayed=True)
    check_queue_room(1)
    try:
        [job] = jobs.queue_jobs(
            [submission],
            api=JobApi.V1,
            idempotency_key=key,
            request_digest=digest,
            webhook_url=webhook_url,
        )
    except IntegrityError:
        # Another request with the same key won the race: answer what it created.
        if (earlier := idempotency.earlier_job(key, digest)) is None:
            raise
        return render_accepted(earlier, replayed=True)
    svc.ocr.notify()
    return render_accepted(job)


def read_webhook_url(values: Mapping[str, Any]) -> str | None:
    """The job's ``webhook_url``, checked, else its key's default (OCR_WEBHOOK_DEFAULTS)."""
    settings = current_services().settings
    value = values.get(WEBHOOK_URL_FIELD)
    if value in (None, ""):
        owner = current_owner()
        return None if owner is None else settings.webhook_defaults.get(owner)
    if not settings.webhook_keys:
        raise BadRequest(
            "this server sends no webhooks (OCR_WEBHOOK_SECRET is not set): leave out "
            f'"{WEBHOOK_URL_FIELD}" and poll the job',
            code="webhooks_disabled",
            field=WEBHOOK_URL_FIELD,
        )
    return check_webhook_url(value, settings.webhook_policy)


def load_job(value: str) -> Job:
    """The caller's job with this id; a 404 without one."""
    job_id = jobs.canonical_job_id(value)
    if job_id is None:
        raise NotFound(
            f"no job with id {value[: jobs.SHOWN_ID_CHARS]!r} (job ids are UUIDs)",
            code="job_not_found",
        )
    job = jobs.find_job(job_id)
    if job is None:
        raise NotFound(f"no job with id {value}", code="job_not_found")
    return job


@bp.get("/jobs/<job_id>")
@Operation(
    summary="A job: its status, progress, and result",
    params=(schemas.JOB_ID_PARAM, schemas.FORMAT_PARAM),
    responses={
        200: Body(
            "the job, or its text, hOCR, TSV or searchable PDF (format=)",
            schemas.RESULT_CONTENT,
        ),
        400: schemas.problem(
            400,
            "bad format",
            "invalid_option",
            "\"format\": 'docx' is not one of json, text, hocr, tsv, pdf",
        ),
        **schemas.KEY_ERRORS,
        404: schemas.NO_SUCH_JOB,
        409: schemas.problem(
            409,
            "format=text|hocr|tsv|pdf of a job not finished yet (result_not_ready), or "
            "format=pdf of a job whose document is no longer kept (format_unavailable)",
            "result_not_ready",
            f"job {schemas.EXAMPLE_JOB_ID} is queued: its text is there once it has succeeded",
        ),
        422: schemas.problem(
            422,
            "format=text|hocr|tsv of a failed or canceled job",
            "engine_timeout",
            "Tesseract gave up on page 1 after 120 s (OCR_PAGE_TIMEOUT_S)",
        ),
        503: schemas.UNAVAILABLE,
    },
)
def get_job(job_id: str) -> Response:
    fmt = result_format(request.args, request.accept_mimetypes)
    job = load_job(job_id)
    pages = deliveries = queue = None
    with current_services().sessions() as session:
        if job.status == JobStatus.SUCCEEDED:
            pages = job_store.get_pages(session, job.id)
        if job.webhook_url is not None and fmt == "json":
            deliveries = job_store.job_deliveries(session, job.id)
    if job.status == JobStatus.QUEUED and fmt == "json":
        queue = queue_place(job)
    return render_job(job, pages, fmt, deliveries, queue, lambda: jobs.kept_document(job))


@bp.get("/jobs/<job_id>/pages/<int:page>/image")
@Operation(
    summary="A preview of a page read",
    description="The page as it was read (upright, after any turn preprocess=auto applied), at "
    f"most {MAX_SIDE_PX} pixels on its long side: PNG for bilevel and grey pages, WebP for "
    "colour. Word boxes, scaled by the preview's width over the page's, fall on their words. "
    "There while the job's document is kept (OCR_KEEP_IMAGES).",
    params=(schemas.JOB_ID_PARAM, schemas.PAGE_NUMBER_PARAM),
    responses={
        200: Body(
            "the page",
            {
                PNG_MEDIA_TYPE: {"type": "string", "format": "binary"},
                WEBP_MEDIA_TYPE: {"type": "string", "format": "binary"},
            },
        ),
        **schemas.KEY_ERRORS,
        404: schemas.problem(
            404,
            "no such job, or the job did not read that page",
            "page_not_found",
            f"job {schemas.EXAMPLE_JOB_ID} read pages 1-3, not page 7",
        ),
        409: schemas.problem(
            409,
            "the job has not succeeded (result_not_ready), or its document is no longer kept "
            "(format_unavailable)",
            "format_unavailable",
            f"job {schemas.EXAMPLE_JOB_ID} no longer has its document, which a page image is "
            "made from",
        ),
        503: schemas.UNAVAILABLE,
    },
)
def page_image(job_id: str, page: int) -> Response:
    job = load_job(job_id)
    rendering.require_succeeded(job, "its pages are shown")
    with current_services().sessions() as session:
        pages = job_store.get_pages(session, job.id)
    read = {p.page: p for p in pages or []}
    if page not in read:
        shown = ", ".join(map(str, sorted(read))) or "none"
        raise NotFound(f"job {job.id} read page(s) {shown}, not page {page}", code="page_not_found")
    document = jobs.kept_document(job)
    if document is None:
        raise Conflict(
            f"job {job.id} no longer has its document, which a page image is made from "
            "(documents are kept with their jobs unless OCR_KEEP_IMAGES=false)",
            code="format_unavailable",
        )
    with rendering.render_turn():
        data, media_type = page_preview(document, page, read[page].rotation)
    response = Response(data, mimetype=media_type)
    # What a finished job read never changes: the browser may keep it.
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def queue_place(job: Job) -> dict[str, Any]:
    """A queued job's place (``schemas.QueuePlace``): the jobs ahead, the OCR servers alive."""
    with current_services().sessions() as session:
        ahead = job_store.jobs_ahead(session, job)
    now = current_fleet()
    return {"jobs_ahead": ahead, "ocr_servers_alive": len(now.alive), "stalled": now.stalled()}


@bp.get("/languages")
@Operation(
    summary="The languages lang= may name",
    description="What the OCR servers' models read, as each says in the database while it "
    "runs: a language model is added to the OCR servers, never to the API.",
    responses={
        200: Body("the languages", {"application/json": schemas.Languages}),
        **schemas.KEY_ERRORS,
        503: schemas.problem(
            503,
            "the database is unavailable",
            "database_unavailable",
            "the database is unavailable; retry shortly",
        ),
    },
)
def list_languages() -> Response:
    now = current_fleet()
    return jsonify(
        {
            "languages": list(now.languages() or ()),
            "default": DEFAULT_LANG,
            "ocr_servers_alive": len(now.alive),
            "stalled": now.stalled(),
        }
    )


@bp.delete("/jobs/<job_id>")
@Operation(
    summary="Cancel a job, or delete a finished one",
    description="A queued (or running) job is canceled: 200 with the canceled job; it will not "
    "run, or its result is discarded. A finished job is deleted with its result and image: 204.",
    params=(schemas.JOB_ID_PARAM,),
    responses={
        200: Body(
            "the canceled job",
            {"application/json": schemas.Job},
            examples={"application/json": schemas.CANCELED_JOB_EXAMPLE},
        ),
        204: Body("deleted"),
        **schemas.KEY_ERRORS,
        404: schemas.NO_SUCH_JOB,
        503: schemas.UNAVAILABLE,
    },
)
def delete_job(job_id: str) -> Response:
    job = load_job(job_id)

    def cancel_or_delete(session: Session) -> tuple[Job, list[WebhookDelivery]] | None:
        """The job canceled and its deliveries, or None when it had finished and is deleted."""
        if job_store.cancel(session, job.id):
            canceled = job_store.get_job(session, job.id)
            assert canceled is not None
            return canceled, job_store.job_deliveries(session, job.id)
        if not job_store.delete_finished(session, job.id):
            raise NotFound(f"no job with id {job_id}", code="job_not_found")
        return None

    # Deletes of one job at once lock its rows in opposite orders: a deadlock is run again.
    canceled = in_transaction(current_services().sessions, cancel_or_delete)
    jobs.remove_files(job.id)
    if canceled is not None:
        return jsonify(job_body(canceled[0], None, canceled[1]))
    return Response(status=204)


@bp.get("/jobs")
@Operation(
    summary="Jobs, newest first",
    params=schemas.LIST_PARAMS,
    responses={
        200: Body("a page of jobs", {"application/json": schemas.JobList}),
        400: schemas.problem(
            400,
            "bad status, limit or cursor",
            "invalid_option",
            "\"status\": 'done' is not one of queued, running, succeeded, failed, canceled",
        ),
        **schemas.KEY_ERRORS,
        503: schemas.UNAVAILABLE,
    },
)
def list_jobs() -> Response:
    status = status_filter(request.args.get("status"))
    limit = page_size(request.args.get("limit"))
    before = decode_cursor(request.args.get("cursor"))
    with current_services().sessions() as session:
        found = job_store.list_recent(
            session, limit=limit + 1, status=status, before=before, owner=current_owner()
        )
    jobs_shown = [job_summary(job) for job in found[:limit]]
    return jsonify({"jobs": jobs_shown, "next_cursor": next_cursor(found, limit)})
