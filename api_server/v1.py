"""The v1 API's routes: documents (images, multi-page TIFFs, PDFs), options, rich results and
jobs. Each view parses (``uploads``, ``pagination``, ``idempotency``), stores or calls
(``jobs``), and renders (``rendering``); errors are schemas.problem+json (``errors.py``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import IntegrityError

from ocr_common import job_store
from ocr_common.errors import BadRequest, EngineError, NotFound, OcrError
from ocr_common.models import Job, JobApi, JobStatus
from ocr_common.webhooks import WEBHOOK_URL_FIELD, check_webhook_url

from . import idempotency, jobs, schemas
from .access import check_queue_room, current_owner
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
        200: Body("the finished job, or its text, hOCR or TSV (format=)", schemas.RESULT_CONTENT),
        **schemas.SUBMIT_ERRORS,
        422: schemas.problem("Tesseract could not read the document"),
    },
)
def ocr_now() -> Response:
    svc = current_services()
    submission, extra = read_submission(extra=("format",))
    fmt = result_format(extra)
    started = job_store.utcnow()
    outcome = jobs.read_now([submission])[0]
    # An engine failure is recorded as a failed job, like any other; a request the OCR server
    # refuses (or cannot take) stores nothing.
    if isinstance(outcome, OcrError) and not isinstance(outcome, EngineError):
        raise outcome
    with svc.sessions.begin() as session:
        job = jobs.record_read(
            session, submission, started_at=started, outcome=outcome, api=JobApi.V1
        )
    if isinstance(outcome, OcrError):
        raise outcome
    return render_job(job, outcome, fmt)


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
        ),
        **schemas.SUBMIT_ERRORS,
        409: schemas.problem("the Idempotency-Key was used for another request"),
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
        with svc.sessions.begin() as session:
            job = jobs.queue_job(
                session,
                submission,
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
    """The job's ``webhook_url`` (checked: an http(s) URL, not at an address webhooks may not
    reach), else the caller's key's default (OCR_WEBHOOK_DEFAULTS); None: no webhook."""
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
    params=(schemas.FORMAT_PARAM,),
    responses={
        200: Body("the job, or its text, hOCR or TSV (format=)", schemas.RESULT_CONTENT),
        400: schemas.problem("bad format"),
        404: schemas.problem("no such job"),
        409: schemas.problem("format=text|hocr|tsv of a job not finished yet"),
        422: schemas.problem("format=text|hocr|tsv of a failed or canceled job"),
        503: schemas.problem("the database is unavailable"),
    },
)
def get_job(job_id: str) -> Response:
    fmt = result_format(request.args)
    job = load_job(job_id)
    result = deliveries = None
    with current_services().sessions() as session:
        if job.status == JobStatus.SUCCEEDED:
            result = job_store.get_result(session, job.id)
        if job.webhook_url is not None and fmt == "json":
            deliveries = job_store.job_deliveries(session, job.id)
    return render_job(job, result, fmt, deliveries)


@bp.delete("/jobs/<job_id>")
@Operation(
    summary="Cancel a job, or delete a finished one",
    description="A queued (or running) job is canceled: 200 with the canceled job; it will not "
    "run, or its result is discarded. A finished job is deleted with its result and image: 204.",
    responses={
        200: Body("the canceled job", {"application/json": schemas.Job}),
        204: Body("deleted"),
        404: schemas.problem("no such job"),
        503: schemas.problem("the database is unavailable"),
    },
)
def delete_job(job_id: str) -> Response:
    job = load_job(job_id)
    with current_services().sessions.begin() as session:
        if job_store.cancel(session, job.id):
            canceled = job_store.get_job(session, job.id)
            assert canceled is not None
            return jsonify(job_body(canceled, None, job_store.job_deliveries(session, job.id)))
        if not job_store.delete_finished(session, job.id):
            raise NotFound(f"no job with id {job_id}", code="job_not_found")
    return Response(status=204)


@bp.get("/jobs")
@Operation(
    summary="Jobs, newest first",
    params=schemas.LIST_PARAMS,
    responses={
        200: Body("a page of jobs", {"application/json": schemas.JobList}),
        400: schemas.problem("bad status, limit or cursor"),
        503: schemas.problem("the database is unavailable"),
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
