"""What both APIs do with a submission and its job, for the caller: read it now and record the
outcome, or queue it; find a job by its id. The views only choose what to show of it."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from flask import request
from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.blobs import BlobMissing, BlobStoreError, JobFiles, StoredDocument
from ocr_common.db import in_transaction
from ocr_common.documents import check_sync_pages
from ocr_common.errors import EngineError, OcrError, PayloadTooLarge, Unavailable
from ocr_common.job_store import KnownResult
from ocr_common.models import Job
from ocr_common.observability import current_request_id
from ocr_common.wire import Reading

from .access import current_owner
from .http_front import caller_gone
from .ocr_client import OcrRequest
from .services import current_services
from .uploads import Submission

log = logging.getLogger(__name__)

# The most of an unknown job id echoed back in a message.
SHOWN_ID_CHARS = 64
# When to try again after the blob store did not answer.
STORE_RETRY_AFTER_S = 2


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


def reuse_or_read(submissions: list[Submission]) -> list[Reading | KnownResult | OcrError]:
    """Each submission's result now: one stored (``job_store.find_result``, with
    OCR_REUSE_RESULTS), else read by the OCR server, or the error it met; a document of more
    pages than OCR_SYNC_MAX_PAGES is refused either way (the answer must not depend on what
    was read before), and so are more pages than that in all (the original API's list of
    images: one request holds one synchronous read's place)."""
    svc = current_services()
    limit = svc.settings.sync_max_pages
    for submission in submissions:
        check_sync_pages(len(submission.document.pages), limit)
    if (pages := sum(len(s.document.pages) for s in submissions)) > limit:
        raise PayloadTooLarge(
            f"the request has {pages} images to read, more than the {limit} a synchronous read "
            "takes (OCR_SYNC_MAX_PAGES): send at most that many at once, or queue them with "
            "POST /image and get each text with GET /image",
            code="too_many_pages_to_wait_for",
        )
    known: dict[int, KnownResult] = {}
    if svc.settings.reuse_results:
        with svc.sessions() as session:
            for index, submission in enumerate(submissions):
                found = job_store.find_result(
                    session,
                    digest=submission.image_digest,
                    owner=current_owner(),
                    options=submission.options,
                )
                if found is not None:
                    known[index] = found
    unknown = [submission for index, submission in enumerate(submissions) if index not in known]
    read = iter(read_now(unknown) if unknown else [])
    return [known[index] if index in known else next(read) for index in range(len(submissions))]


def read_now(submissions: list[Submission]) -> list[Reading | OcrError]:
    """Each submission read by the OCR server now, or the error it met: within
    OCR_SYNC_TIMEOUT_S, and until its caller hangs up."""
    settings = current_services().settings
    requests = [OcrRequest(s.data, s.options, len(s.document.pages)) for s in submissions]
    deadline = time.monotonic() + settings.sync_timeout_s
    gone = caller_gone(request.environ)
    return current_services().ocr.recognize(requests, deadline=deadline, gone=gone)


def record_reads(
    submissions: list[Submission],
    outcomes: list[Reading | KnownResult | OcrError],
    *,
    started_at: datetime,
    **job: Any,
) -> list[Job]:
    """The reads made now as finished jobs of the caller, in one transaction, whichever API
    asked (results and engine failures, not refusals); then the first error met is raised."""
    recorded = [
        (submission, outcome)
        for submission, outcome in zip(submissions, outcomes, strict=True)
        if not isinstance(outcome, OcrError) or isinstance(outcome, EngineError)
    ]
    # A document read is kept with its job, as a queued one is (its PDF, later).
    documents = [
        None if isinstance(outcome, OcrError) else keep_document(submission)
        for submission, outcome in recorded
    ]

    def record(session: Session) -> list[Job]:
        return [
            job_store.record_finished(
                session,
                **_columns(submission),
                **_outcome_columns(outcome),
                image=submission.data,
                digest=submission.image_digest,
                started_at=started_at,
                document=document,
                **job,
            )
            for (submission, outcome), document in zip(recorded, documents, strict=True)
        ]

    try:
        finished = in_transaction(current_services().sessions, record)
    except BaseException:
        for document in documents:
            if document is not None:
                remove_files(document.job_id)
        raise
    for outcome in outcomes:
        if isinstance(outcome, OcrError):
            raise outcome
    return finished


def _outcome_columns(outcome: Reading | KnownResult | OcrError) -> dict[str, Any]:
    """What a finished job stores of a read made now: its result (read or reused) or error."""
    if isinstance(outcome, OcrError):
        return {"text": None, "error_code": outcome.code, "error_message": outcome.message}
    return {"text": outcome.text, "pages": outcome.pages}


def keep_document(submission: Submission) -> StoredDocument | None:
    """The document of a read made now, kept for its job (OCR_KEEP_IMAGES: its searchable PDF
    later); None when it is not kept (the store not answering only costs that)."""
    svc = current_services()
    if not svc.settings.keep_images:
        return None
    try:
        return svc.files.store_document(submission.data, submission.image_digest)
    except BlobStoreError as exc:
        log.warning("document of a synchronous read not kept: %s", exc)
        return None


def kept_document(job: Job) -> bytes | None:
    """The document a finished job was read from, while it is kept; a 503 if the store is down."""
    if job.document_key is None:
        return None
    try:
        return current_services().files.read_document(job.document_key)
    except BlobMissing:
        return None
    except BlobStoreError as exc:
        raise _store_unavailable(exc, "retry shortly") from None


def queue_jobs(submissions: list[Submission], **job: Any) -> list[Job]:
    """Queued jobs of the caller, committed (the caller notifies): the documents first, then
    the jobs in one transaction, so a job never exists without its document."""
    svc = current_services()
    documents = _store_documents(svc.files, submissions)
    columns = [
        {**_columns(submission), "document": document}
        for submission, document in zip(submissions, documents, strict=True)
    ]

    def create(session: Session) -> list[Job]:
        return [
            job_store.create_job(
                session,
                **values,
                max_attempts=svc.settings.max_attempts,
                request_id=current_request_id(),
                **job,
            )
            for values in columns
        ]

    try:
        return in_transaction(svc.sessions, create)
    except BaseException:
        with contextlib.suppress(BlobStoreError):
            svc.files.remove_jobs([document.job_id for document in documents])
        raise


# Documents of one request stored at once (a list of images on the original API).
STORE_THREADS = 8


def _store_documents(files: JobFiles, submissions: list[Submission]) -> list[StoredDocument]:
    """Each submission's document in the blob store, under a new job id; else a 503."""

    def store(submission: Submission) -> StoredDocument:
        return files.store_document(submission.data, submission.image_digest)

    try:
        if len(submissions) == 1:
            return [store(submissions[0])]
        with ThreadPoolExecutor(min(STORE_THREADS, len(submissions))) as pool:
            futures = [pool.submit(store, submission) for submission in submissions]
        errors = [error for future in futures if (error := future.exception()) is not None]
        if errors:
            stored = [future.result().job_id for future in futures if not future.exception()]
            with contextlib.suppress(BlobStoreError):
                files.remove_jobs(stored)
            raise errors[0]
        return [future.result() for future in futures]
    except BlobStoreError as exc:
        raise _store_unavailable(exc, "nothing was stored, retry shortly") from None


def _store_unavailable(exc: BlobStoreError, advice: str) -> Unavailable:
    log.warning("blob store unavailable: %s", exc)
    return Unavailable(
        f"the document store is unavailable; {advice}",
        code="storage_unavailable",
        retry_after_s=STORE_RETRY_AFTER_S,
    )


def remove_files(job_id: str) -> None:
    """Delete the files of a job just canceled or deleted (or leave them to the sweep)."""
    try:
        current_services().files.remove_jobs([job_id])
    except BlobStoreError as exc:
        log.warning("files of job %s not deleted (%s); the sweep will", job_id, exc)


def _columns(submission: Submission) -> dict[str, Any]:
    """What a queued job of the caller stores of its submission."""
    return {
        "options": submission.options,
        "fmt": submission.document.format,
        "pages_total": len(submission.document.pages),
        "owner": current_owner(),
    }
