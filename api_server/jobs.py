"""What both APIs do with a submission and its job, for the caller: read it now and record the
outcome, or queue it; find a job by its id. The views only choose what to show of it."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from flask import request
from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.documents import check_sync_pages
from ocr_common.errors import OcrError
from ocr_common.models import Job
from ocr_common.observability import current_request_id

from .access import current_owner
from .http_front import caller_gone
from .ocr_client import OcrRequest
from .services import current_services
from .uploads import Submission

# The most of an unknown job id echoed back in a message.
SHOWN_ID_CHARS = 64


def canonical_job_id(value: str) -> str | None:
    """The id as stored (a lower-case UUID), or None when no job can have it."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def find_job(job_id: str) -> Job | None:
    """The caller's job with this (canonical) id, or None."""
    with current_services().sessions() as session:
        return job_store.get_job(session, job_id, owner=current_owner())


def stored_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a job keeps of a result: the text and the pages (None: none, or text only)."""
    if result is None or result.get("pages") is None:
        return None
    return {"text": result["text"], "pages": result["pages"]}


def read_now(submissions: list[Submission]) -> list[dict[str, Any] | OcrError]:
    """Each submission read by the OCR server now: its result, or the error it met.

    A synchronous read has a budget: OCR_SYNC_MAX_PAGES pages a document (more is a 413 that
    points to the job queue), OCR_SYNC_TIMEOUT_S from now; and it stops when its caller hangs
    up (see http_front.caller_gone).
    """
    settings = current_services().settings
    for submission in submissions:
        check_sync_pages(len(submission.document.pages), settings.sync_max_pages)
    requests = [OcrRequest(s.data, s.options, len(s.document.pages)) for s in submissions]
    deadline = time.monotonic() + settings.sync_timeout_s
    gone = caller_gone(request.environ)
    return current_services().ocr.recognize(requests, deadline=deadline, gone=gone)


def record_read(
    session: Session,
    submission: Submission,
    *,
    started_at: datetime,
    outcome: dict[str, Any] | OcrError,
    **job: Any,
) -> Job:
    """A read made now (its result, or the error it met) as a finished job of the caller."""
    failed = outcome if isinstance(outcome, OcrError) else None
    result = outcome if isinstance(outcome, dict) else None
    return job_store.record_finished(
        session,
        **_columns(submission),
        started_at=started_at,
        text=str(result["text"]) if result else None,
        error_code=failed.code if failed else None,
        error_message=failed.message if failed else None,
        result=stored_result(result),
        **job,
    )


def queue_job(session: Session, submission: Submission, **job: Any) -> Job:
    """A queued job of the caller (the caller's transaction commits it, then notifies)."""
    return job_store.create_job(
        session,
        **_columns(submission),
        max_attempts=current_services().settings.max_attempts,
        request_id=current_request_id(),
        **job,
    )


def _columns(submission: Submission) -> dict[str, Any]:
    """What a job of the caller stores of its submission, read now or queued."""
    return {
        "image": submission.data,
        "digest": submission.image_digest,
        "options": submission.options,
        "fmt": submission.document.format,
        "pages_total": len(submission.document.pages),
        "owner": current_owner(),
    }
