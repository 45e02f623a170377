"""A v1 job as the client asked for it: the JSON job, or its text, hOCR or TSV."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Response, jsonify

from ocr_common.errors import Conflict
from ocr_common.models import Job, JobStatus
from ocr_common.options import invalid_option
from ocr_common.results import public_result, to_hocr, to_tsv

FORMATS = ("json", "text", "hocr", "tsv")
HOCR_MEDIA_TYPE = "application/xhtml+xml"
TSV_MEDIA_TYPE = "text/tab-separated-values"


def result_format(values: Mapping[str, Any]) -> str:
    """The ``format`` asked for (json by default); another value is a 400."""
    value = str(values.get("format") or "json").lower()
    if value not in FORMATS:
        raise invalid_option("format", f"{value[:20]!r} is not one of " + ", ".join(FORMATS))
    return value


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


def job_summary(job: Job) -> dict[str, Any]:
    failure = job.failure()
    error = None
    if failure is not None:
        error = {"code": failure.code, "message": job.error_message or failure.message}
    progress = None
    if job.pages_total is not None:
        progress = {"pages_done": job.pages_done or 0, "pages_total": job.pages_total}
    return {
        "id": job.id,
        "status": job.status.value,
        "kind": job.kind,
        "api": job.api.value,
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


def job_body(
    job: Job, result: dict[str, Any] | None, queue: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON job; ``queue``: a queued job's place (``schemas.QueuePlace``)."""
    done = job.status == JobStatus.SUCCEEDED
    return {
        **job_summary(job),
        "text": job.text if done else None,
        "pages": public_result(result)["pages"] if done and result is not None else None,
        "queue": queue,
    }


def render_job(
    job: Job, result: dict[str, Any] | None, fmt: str, queue: dict[str, Any] | None = None
) -> Response:
    """The job in the asked ``format``: the JSON job, or its text, hOCR or TSV."""
    if fmt == "json":
        return jsonify(job_body(job, result, queue))
    if job.status != JobStatus.SUCCEEDED:
        if (failure := job.failure()) is not None:
            raise failure
        raise Conflict(
            f"job {job.id} is {job.status.value}: its {fmt} is there once it has succeeded",
            code="result_not_ready",
        )
    if fmt == "text":
        return Response(job.text or "", mimetype="text/plain")
    if result is None:
        raise Conflict(
            f"job {job.id} was read before its pages were kept (the original API kept only "
            "the text then): ask for format=text or json",
            code="format_unavailable",
        )
    if fmt == "hocr":
        return Response(to_hocr(result), mimetype=HOCR_MEDIA_TYPE)
    return Response(to_tsv(result), mimetype=TSV_MEDIA_TYPE)


def render_accepted(job: Job, replayed: bool = False) -> Response:
    """202 with the queued job and where to poll it."""
    response = jsonify(job_body(job, None))
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
