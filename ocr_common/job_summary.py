"""A job's summary as both services show it: the v1 API's job (without its text and pages)
and the ``data`` of a webhook event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import Job
from .webhooks import shown_url


def iso_time(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with a Z."""
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
        "created_at": iso_time(job.created_at),
        "started_at": iso_time(job.started_at),
        "finished_at": iso_time(job.finished_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "format": job.format,
        "options": job.options.to_dict() if job.options is not None else None,
        "progress": progress,
        "error": error,
        "webhook_url": None if job.webhook_url is None else shown_url(job.webhook_url),
    }
