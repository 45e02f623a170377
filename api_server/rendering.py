"""A v1 job as the client asked for it: the JSON job, or its text, hOCR, TSV, ALTO or PDF."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Response, jsonify
from werkzeug.datastructures import MIMEAccept

from ocr_common.errors import Conflict, Unavailable
from ocr_common.job_summary import iso_time, job_summary
from ocr_common.memory import release_memory
from ocr_common.models import Job, JobStatus, WebhookDelivery
from ocr_common.options import invalid_option
from ocr_common.render import alto, hocr, tsv
from ocr_common.render.pdf import PDF_MEDIA_TYPE, searchable_pdf, text_pages
from ocr_common.result import Page

FORMATS = ("json", "text", "hocr", "tsv", "alto", "pdf")
JSON_MEDIA_TYPE = "application/json"


# Renderings that decode a page's pixels in the API process (page previews, searchable PDFs)
# run this many at once in a process, each up to a few hundred MB for a large page (16 previews
# of one 7,000 px square page at once took 9.7 GB in two API processes); one that waits
# RENDER_WAIT_S for its turn is told to retry.
RENDERS_AT_ONCE = 2
RENDER_WAIT_S = 10.0
_renders = threading.BoundedSemaphore(RENDERS_AT_ONCE)


@contextlib.contextmanager
def render_turn() -> Iterator[None]:
    """Hold one of the process's RENDERS_AT_ONCE places; a 503 after RENDER_WAIT_S."""
    if not _renders.acquire(timeout=RENDER_WAIT_S):
        raise Unavailable(
            f"{RENDERS_AT_ONCE} pages are being rendered in this API process and others wait; "
            "retry shortly",
            code="renderer_busy",
        )
    try:
        yield
    finally:
        _renders.release()
        release_memory()  # the page's pixels: else glibc keeps them for the process's life


def result_format(values: Mapping[str, Any], accept: MIMEAccept | None = None) -> str:
    """The ``format`` asked for: the parameter, else ``Accept: application/pdf``, else json."""
    value = str(values.get("format") or "").lower()
    if not value and accept is not None:
        preferred = accept.best_match([JSON_MEDIA_TYPE, PDF_MEDIA_TYPE])
        value = "pdf" if preferred == PDF_MEDIA_TYPE else ""
    value = value or "json"
    if value not in FORMATS:
        raise invalid_option("format", f"{value[:20]!r} is not one of " + ", ".join(FORMATS))
    return value


def job_body(
    job: Job,
    pages: list[Page] | None,
    deliveries: list[WebhookDelivery] | None = None,
    queue: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON job; ``queue``: a queued job's place (``schemas.QueuePlace``)."""
    done = job.status == JobStatus.SUCCEEDED
    return {
        **job_summary(job),
        "text": job.text if done else None,
        "pages": (
            [page.model_dump(mode="json") for page in pages] if done and pages is not None else None
        ),
        "queue": queue,
        "webhook_deliveries": (
            None if job.webhook_url is None else [_delivery(d) for d in deliveries or []]
        ),
    }


def _delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    """The delivery as the job shows it: its fields in order, times in ISO 8601."""
    times = ("created_at", "last_attempt_at", "next_attempt_at")
    return {
        name: iso_time(value) if name in times else value
        for name, value in dataclasses.asdict(delivery).items()
    }


def render_job(
    job: Job,
    pages: list[Page] | None,
    fmt: str,
    deliveries: list[WebhookDelivery] | None = None,
    queue: dict[str, Any] | None = None,
    document: Callable[[], bytes | None] | None = None,
) -> Response:
    """The job in the asked ``format`` (``document``: the one it was read from, if kept)."""
    if fmt == "json":
        return jsonify(job_body(job, pages, deliveries, queue))
    require_succeeded(job, f"its {fmt} is there")
    if fmt == "text":
        return Response(job.text or "", mimetype="text/plain")
    if pages is None:
        raise Conflict(
            f"job {job.id} was read before its pages were kept (the original API kept only "
            "the text then): ask for format=text or json",
            code="format_unavailable",
        )
    if fmt == "hocr":
        return Response(hocr.render_hocr(pages), mimetype=hocr.MEDIA_TYPE)
    if fmt == "alto":
        return Response(alto.render_alto(pages, file_name=job.id), mimetype=alto.MEDIA_TYPE)
    if fmt == "pdf":
        return render_pdf(job, pages, document)
    return Response(tsv.render_tsv(pages), mimetype=tsv.MEDIA_TYPE)


def require_succeeded(job: Job, what: str) -> None:
    """Raise why a job has no result: the error it failed with, else a 409 (not ready)."""
    if job.status != JobStatus.SUCCEEDED:
        if (failure := job.failure()) is not None:
            raise failure
        raise Conflict(
            f"job {job.id} is {job.status.value}: {what} once it has succeeded",
            code="result_not_ready",
        )


def render_pdf(
    job: Job, pages: list[Page], document: Callable[[], bytes | None] | None
) -> Response:
    """The searchable PDF of a job whose document is kept; a 409 that says how to get one."""
    data = document() if document is not None else None
    if data is None:
        raise Conflict(
            f"job {job.id} no longer has its document, which a searchable PDF is made from "
            "(documents are kept with their jobs unless OCR_KEEP_IMAGES=false): send it again "
            "with POST /v1/ocr?format=pdf, or with POST /v1/jobs on a server that keeps them",
            code="format_unavailable",
        )
    with render_turn():
        pdf = searchable_pdf(data, text_pages(pages))
    response = Response(pdf, mimetype=PDF_MEDIA_TYPE)
    response.headers["Content-Disposition"] = f'inline; filename="{job.id}.pdf"'
    return response


def render_accepted(job: Job, replayed: bool = False) -> Response:
    """202 with the queued job and where to poll it."""
    response = jsonify(job_body(job, None))
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
