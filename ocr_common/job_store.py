"""All SQL about jobs. These functions never commit: the caller owns the transaction."""

from __future__ import annotations

import functools
import hashlib
import operator
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Select,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from .blobs import StoredDocument
from .models import (
    ClaimedDelivery,
    ClaimedJob,
    DeliveryAttempt,
    DeliveryStatus,
    Job,
    JobApi,
    JobImageRow,
    JobOutcome,
    JobRow,
    JobStatus,
    WebhookDelivery,
    WebhookDeliveryRow,
)
from .options import ORIGINAL_API_OPTIONS, OcrOptions
from .result import Page, legacy_pages, pack_page, store_pages, stored_pages

RUNNING = JobStatus.RUNNING.value
QUEUED = JobStatus.QUEUED.value
JOBS = cast(Table, JobRow.__table__)
IMAGES = cast(Table, JobImageRow.__table__)
DELIVERIES = cast(Table, WebhookDeliveryRow.__table__)
PENDING = DeliveryStatus.PENDING.value
FINAL_STATUSES = tuple(status.value for status in JobStatus if status.is_final)
# A job whose document is gone fails at once with this code: reading it again cannot help.
DOCUMENT_MISSING = "document_missing"
DOCUMENT_MISSING_MESSAGE = (
    "the stored document of this job is missing from the blob store (OCR_BLOB_URL), so it "
    "cannot be read: submit it again"
)


def utcnow() -> datetime:
    """Naive UTC, as every timestamp column stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def rows_matched(session: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE and say how many rows it matched."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


def _update(session: Session, *where: ColumnElement[bool], **values: Any) -> int:
    return rows_matched(session, update(JOBS).where(*where).values(**values))


def _held_by(worker_id: str) -> tuple[ColumnElement[bool], ...]:
    """The rows ``worker_id`` still holds: a lease that expired or a cancel takes a job away."""
    return (JOBS.c.worker_id == worker_id, JOBS.c.status == RUNNING)


def _owned_by(owner: str | None) -> ColumnElement[bool]:
    return JOBS.c.owner.is_(None) if owner is None else JOBS.c.owner == owner


def _beyond(key: tuple[datetime, str], later: Callable[[Any, Any], Any]) -> ColumnElement[bool]:
    """Keyset paging: the jobs past (``later``: < or >) the job whose (created_at, id) is key."""
    created, job_id = key
    return or_(
        later(JOBS.c.created_at, created),
        and_(JOBS.c.created_at == created, later(JOBS.c.id, job_id)),
    )


def _skip_locked(session: Session, query: Select[Any]) -> Select[Any]:
    """``query`` skipping rows another transaction locks (SQLite has one writer at a time)."""
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        return query.with_for_update(skip_locked=True)
    return query


def new_job_id() -> str:
    return str(uuid.uuid4())


def image_digest(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def create_job(
    session: Session,
    *,
    document: StoredDocument,
    max_attempts: int,
    owner: str | None = None,
    api: JobApi = JobApi.ORIGINAL,
    options: OcrOptions = ORIGINAL_API_OPTIONS,
    fmt: str | None = None,
    pages_total: int = 1,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
    request_id: str | None = None,
    webhook_url: str | None = None,
) -> Job:
    """Queue a job for a document already in the blob store (``JobFiles.store_document``); it
    exists for workers once the caller commits. Without ``api``/``options``: the original API's."""
    return _insert_job(
        session,
        id=document.job_id,
        max_attempts=max_attempts,
        owner=owner,
        image_bytes=document.size,
        image_sha256=document.digest,
        document_key=document.key,
        options=options.to_json(),
        format=fmt,
        pages_total=pages_total,
        idempotency_key=idempotency_key,
        request_sha256=request_digest,
        api=api.value,
        request_id=request_id,
        webhook_url=webhook_url,
    )


# A new job row: every column NULL but these and those its maker gives.
_NEW_JOB = {"status": QUEUED, "kind": "async", "attempts": 0, "pages_total": 1, "pages_done": 0}


def _insert_job(session: Session, **columns: Any) -> Job:
    """The one way a job row is inserted: Core, as the ORM's unit of work costs intake CPU."""
    new = {**dict.fromkeys(JOBS.c.keys()), **_NEW_JOB, "id": new_job_id(), "created_at": utcnow()}
    values = {**new, **columns}
    session.execute(insert(JOBS).values(values))
    return Job.from_row(SimpleNamespace(**values))


def record_finished(
    session: Session,
    *,
    image: bytes,
    started_at: datetime,
    text: str | None,
    error_code: str | None = None,
    error_message: str | None = None,
    owner: str | None = None,
    digest: str | None = None,
    api: JobApi = JobApi.ORIGINAL,
    options: OcrOptions = ORIGINAL_API_OPTIONS,
    fmt: str | None = None,
    pages_total: int = 1,
    pages: Sequence[Page] | None = None,
    document: StoredDocument | None = None,
) -> Job:
    """Record a read whose outcome is known (a synchronous read, a reused result) as a job."""
    return _insert_job(
        session,
        id=document.job_id if document is not None else new_job_id(),
        document_key=document.key if document is not None else None,
        status=JobStatus.SUCCEEDED.value if error_code is None else JobStatus.FAILED.value,
        kind="sync",
        owner=owner,
        created_at=started_at,
        started_at=started_at,
        finished_at=utcnow(),
        attempts=1,
        max_attempts=1,
        image_bytes=len(image),
        image_sha256=digest or image_digest(image),
        text=text,
        error_code=error_code,
        error_message=error_message,
        options=options.to_json(),
        format=fmt,
        pages_total=pages_total,
        pages_done=pages_total if pages is not None else 0,
        page_results=None if pages is None else store_pages(list(map(pack_page, pages))),
        api=api.value,
    )


class KnownResult(NamedTuple):
    """A result read before: its text, and its pages (None in jobs from before migration 0007)."""

    text: str
    pages: list[Page] | None


def find_result(
    session: Session, *, digest: str, owner: str | None, options: OcrOptions
) -> KnownResult | None:
    """A succeeded job's result on the same bytes, owner and options (whichever API made it):
    the one rule of result reuse, at claim time and for a synchronous read alike."""
    same_options = JOBS.c.options == options.to_json()
    if options == ORIGINAL_API_OPTIONS:
        # Jobs of the original API made before migration 0007 kept no options.
        same_options = or_(same_options, JOBS.c.options.is_(None))
    query = (
        select(JOBS.c.text, JOBS.c.page_results, JOBS.c.result)
        .where(JOBS.c.image_sha256 == digest, JOBS.c.status == JobStatus.SUCCEEDED.value)
        .where(_owned_by(owner), same_options)
        .limit(1)
    )
    row = session.execute(query).first()
    if row is None or row.text is None:
        return None
    return KnownResult(row.text, _pages(row.page_results, row.result))


def _pages(stored: bytes | None, legacy: str | None) -> list[Page] | None:
    """The pages a job row keeps: packed, or in the shape results had before migration 0011."""
    if stored is not None:
        return stored_pages(stored)
    return None if legacy is None else legacy_pages(legacy)


def _job_columns() -> list[ColumnElement[Any]]:
    """Every column of a job but its pages, which a Job never holds."""
    return [column for column in JOBS.c if column.name not in ("result", "page_results")]


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job | None:
    """The job, or None if there is none with that id for that owner (None: any owner)."""
    query = select(*_job_columns()).where(JOBS.c.id == job_id)
    if owner is not None:
        query = query.where(JOBS.c.owner == owner)
    row = session.execute(query).first()
    return None if row is None else Job.from_row(row)


def get_pages(session: Session, job_id: str) -> list[Page] | None:
    """The stored pages of a job (None: none, or a job from before migration 0007)."""
    query = select(JOBS.c.page_results, JOBS.c.result).where(JOBS.c.id == job_id)
    row = session.execute(query).first()
    return None if row is None else _pages(row.page_results, row.result)


def find_by_idempotency_key(session: Session, key: str) -> Job | None:
    row = session.scalars(select(JobRow).where(JobRow.idempotency_key == key)).first()
    return None if row is None else Job.from_row(row)


def list_recent(
    session: Session,
    *,
    limit: int,
    status: JobStatus | None = None,
    before: tuple[datetime, str] | None = None,
    owner: str | None = None,
) -> list[Job]:
    """Jobs newest first; ``before`` is the (created_at, id) of the last job of the page before."""
    query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
    if status is not None:
        query = query.where(JobRow.status == status.value)
    if owner is not None:
        query = query.where(JobRow.owner == owner)
    if before is not None:
        query = query.where(_beyond(before, operator.lt))
    return [Job.from_row(row) for row in session.scalars(query)]


def cancel(session: Session, job_id: str) -> bool:
    """Withdraw a job not finished (it will not run, or its result is discarded); once
    committed, the caller deletes its files (``JobFiles.remove_jobs``)."""
    now = utcnow()
    done = _update(
        session,
        JOBS.c.id == job_id,
        JOBS.c.status.in_((QUEUED, RUNNING)),
        status=JobStatus.CANCELED.value,
        finished_at=now,
        lease_until=None,
        document_key=None,
        error_code="canceled",
        error_message="canceled by its owner",
    )
    if done:
        session.execute(delete(IMAGES).where(IMAGES.c.job_id == job_id))
        url = session.scalar(select(JOBS.c.webhook_url).where(JOBS.c.id == job_id))
        if url is not None:
            _queue_deliveries(session, {job_id: JobStatus.CANCELED}, now)
    return bool(done)


def delete_finished(session: Session, job_id: str) -> bool:
    """Delete a finished job; once committed, the caller deletes its files (``remove_jobs``)."""
    finished = (JOBS.c.id == job_id, JOBS.c.status.in_(FINAL_STATUSES))
    session.execute(delete(IMAGES).where(IMAGES.c.job_id.in_(select(JOBS.c.id).where(*finished))))
    return bool(rows_matched(session, delete(JOBS).where(*finished)))


def results_page(
    session: Session,
    *,
    owner: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 1000,
) -> list[tuple[str, str | None, datetime]]:
    """(id, text, created_at) of up to ``limit`` jobs oldest first, after the job ``after``
    (its created_at and id): a listing of any length in short transactions."""
    query = (
        select(JOBS.c.id, JOBS.c.text, JOBS.c.created_at)
        .order_by(JOBS.c.created_at, JOBS.c.id)
        .limit(limit)
    )
    if owner is not None:
        query = query.where(JOBS.c.owner == owner)
    if after is not None:
        query = query.where(_beyond(after, operator.gt))
    return [(row[0], row[1], row[2]) for row in session.execute(query)]


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


def count_queued(session: Session, *, owner: str | None, up_to: int) -> int:
    """Queued jobs of ``owner`` (None: without API keys), counted up to ``up_to`` + 1 only (from
    the ``(status, owner)`` index): the per-key cap costs the same whatever the backlog."""
    mine = select(JOBS.c.id).where(JOBS.c.status == QUEUED, _owned_by(owner))
    queued = mine.limit(up_to + 1).subquery()
    return int(session.execute(select(func.count()).select_from(queued)).scalar_one())


# A queued job's place is counted up to this many jobs ahead: further back, it only says "far".
MAX_COUNTED_AHEAD = 10_000


def jobs_ahead(session: Session, job: Job, *, up_to: int = MAX_COUNTED_AHEAD) -> int:
    """Queued jobs claimed before ``job``, counted up to ``up_to`` (from an index alone)."""
    ahead = select(JOBS.c.id).where(
        JOBS.c.status == QUEUED, _beyond((job.created_at, job.id), operator.lt)
    )
    counted = ahead.limit(up_to).subquery()
    return int(session.execute(select(func.count()).select_from(counted)).scalar_one())


def heartbeat(session: Session, *, worker_id: str, job_ids: Sequence[str], lease_s: float) -> int:
    """Extend the leases ``worker_id`` holds on ``job_ids``; returns how many it still holds."""
    if not job_ids:
        return 0
    lease_until = utcnow() + timedelta(seconds=lease_s)
    return _update(session, JOBS.c.id.in_(job_ids), *_held_by(worker_id), lease_until=lease_until)


def progress(session: Session, *, job_id: str, worker_id: str, pages_done: int) -> bool:
    """Record how many pages of a running document are read; False: the job is no longer ours
    (canceled, or taken over), so its remaining pages need not be read."""
    return bool(_update(session, JOBS.c.id == job_id, *_held_by(worker_id), pages_done=pages_done))


def claim_batch(
    session: Session, *, worker_id: str, lease_s: float, limit: int
) -> list[ClaimedJob]:
    """Take up to ``limit`` of the oldest queued jobs for ``worker_id``, each leased for
    ``lease_s`` (SKIP LOCKED: concurrent claimers take disjoint batches); the caller commits at
    once, so no lock is held while the engine works."""
    if limit < 1:
        return []
    candidates = select(JOBS.c.id).where(JOBS.c.status == QUEUED)
    candidates = candidates.order_by(JOBS.c.created_at, JOBS.c.id).limit(limit)
    ids = list(session.scalars(_skip_locked(session, candidates)).all())
    if not ids:
        return []
    now = utcnow()
    # Every id is still queued here (locked on MySQL; on SQLite this transaction is the only
    # writer, BEGIN IMMEDIATE), but the status guard costs nothing and keeps the claim a
    # compare-and-set whatever the isolation.
    _update(
        session,
        JOBS.c.id.in_(ids),
        JOBS.c.status == QUEUED,
        status=RUNNING,
        worker_id=worker_id,
        lease_until=now + timedelta(seconds=lease_s),
        started_at=now,
        attempts=JOBS.c.attempts + 1,
        # A retried document is read again from its first page.
        pages_done=case((JOBS.c.pages_total.is_not(None), 0), else_=None),
    )
    rows = session.execute(
        select(JOBS, IMAGES.c.data)
        .select_from(JOBS.outerjoin(IMAGES, IMAGES.c.job_id == JOBS.c.id))
        .where(JOBS.c.id.in_(ids), *_held_by(worker_id))
    ).all()
    by_id = {row.id: row for row in rows}
    claimed: list[ClaimedJob] = []
    for job_id in ids:
        row = by_id.get(job_id)
        if row is None:
            continue
        if row.data is None and row.document_key is None:
            # A queued job without its document cannot run; it never should exist, but if it
            # does it must not be claimed again and again: fail it once.
            missing = JobOutcome(
                job_id, error_code=DOCUMENT_MISSING, error_message=DOCUMENT_MISSING_MESSAGE
            )
            finish_batch(session, worker_id=worker_id, outcomes=[missing])
            continue
        claimed.append(ClaimedJob.from_row(row))
    return claimed


def finish_batch(
    session: Session,
    *,
    worker_id: str,
    outcomes: Sequence[JobOutcome],
    keep_images: bool = False,
) -> list[str]:
    """Write the outcomes of the jobs ``worker_id`` still holds (the others are not touched),
    with their webhook deliveries, and let go of their documents unless ``keep_images``; the
    ids written, whose documents the caller deletes once committed (``release_documents``)."""
    if not outcomes:
        return []
    ids = [outcome.job_id for outcome in outcomes]
    # Lock the rows that are still ours first: none can change hands between its UPDATE and
    # the DELETE of its image (SQLite: this transaction is the only writer anyway).
    # With each job's webhook_url: the jobs that have one get their delivery in this
    # transaction; and its document_key: a job queued before the blob store has its bytes in
    # job_images.
    attempts = {outcome.job_id: outcome.attempt for outcome in outcomes}
    rows = [
        row
        for row in session.execute(
            select(JOBS.c.id, JOBS.c.webhook_url, JOBS.c.document_key, JOBS.c.attempts)
            .where(JOBS.c.id.in_(ids), *_held_by(worker_id))
            .with_for_update()
        )
        if attempts[row.id] in (None, row.attempts)
    ]
    held = {row.id: row.webhook_url for row in rows}
    if not held:
        return []
    now = utcnow()
    released = {} if keep_images else {"document_key": None}
    for chunk in _by_size([outcome for outcome in outcomes if outcome.job_id in held]):
        _update(
            session,
            JOBS.c.id.in_([outcome.job_id for outcome in chunk]),
            *_held_by(worker_id),
            finished_at=now,
            lease_until=None,
            **released,
            **_per_job_values(chunk),
        )
    legacy = [row.id for row in rows if row.document_key is None]
    if legacy and not keep_images:
        session.execute(delete(IMAGES).where(IMAGES.c.job_id.in_(legacy)))
    _queue_deliveries(
        session, {o.job_id: o.status for o in outcomes if held.get(o.job_id) is not None}, now
    )
    return [job_id for job_id in ids if job_id in held]


# How much text and result one UPDATE of finish_batch carries: well inside MySQL's smallest
# usual max_allowed_packet (16 MiB on MariaDB), and a result as large as ``finish`` takes goes
# in a statement of its own.
FINISH_STATEMENT_BYTES = 1024 * 1024


def _by_size(outcomes: list[JobOutcome]) -> Iterator[list[JobOutcome]]:
    chunk: list[JobOutcome] = []
    size = 0
    for outcome in outcomes:
        weight = len(outcome.text or "") + len(outcome.error_message or "")
        weight += len(outcome.stored_pages or b"")
        if chunk and size + weight > FINISH_STATEMENT_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(outcome)
        size += weight
    if chunk:
        yield chunk


def _per_id(id_column: Any, values: dict[str, Any], kept: Any = None) -> Any:
    """A SET value per row id: one value where they all agree (usually the status and the
    error columns), else a CASE on the id; ``kept``: the column, for rows not in ``values``."""
    if kept is None and len(set(values.values())) == 1:
        return next(iter(values.values()))
    return case(values, value=id_column, else_=kept)


def _per_job_values(outcomes: list[JobOutcome]) -> dict[str, Any]:
    """SET values for a batch of outcomes (``_per_id``)."""
    per_job = functools.partial(_per_id, JOBS.c.id)
    values = {
        "status": per_job({o.job_id: o.status.value for o in outcomes}),
        "text": per_job({o.job_id: o.text for o in outcomes}),
        "error_code": per_job({o.job_id: o.error_code for o in outcomes}),
        "error_message": per_job({o.job_id: o.error_message for o in outcomes}),
    }
    documents = [o for o in outcomes if o.pages is not None]
    if documents:
        # Only outcomes with pages change them, as a job without them keeps its own.
        values["page_results"] = per_job(
            {o.job_id: o.stored_pages for o in documents}, JOBS.c.page_results
        )
        values["pages_done"] = per_job(
            {o.job_id: len(o.pages or ()) for o in documents}, JOBS.c.pages_done
        )
    return values


def release(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    error_code: str | None = None,
    error_message: str | None = None,
    count_attempt: bool = True,
) -> bool:
    """Put a job ``worker_id`` holds back in the queue (to retry, or because it is stopping);
    ``count_attempt=False`` gives back the attempt the claim took (a shutdown, not the job)."""
    released = _update(
        session,
        JOBS.c.id == job_id,
        *_held_by(worker_id),
        status=QUEUED,
        worker_id=None,
        lease_until=None,
        error_code=error_code,
        error_message=error_message,
        attempts=JOBS.c.attempts - (0 if count_attempt else 1),
    )
    return bool(released)


def purge_finished(
    session: Session, *, finished_before: datetime, batch: int = 1000
) -> tuple[int, list[str]]:
    """Delete up to ``batch`` jobs that finished before the cut-off; how many, and the ids of
    those whose files the caller deletes once this is committed (``JobFiles.remove_jobs``)."""
    finished = (JOBS.c.status.in_(FINAL_STATUSES), JOBS.c.finished_at < finished_before)
    rows = session.execute(select(JOBS.c.id, JOBS.c.document_key).where(*finished).limit(batch))
    found = rows.all()
    if not found:
        return 0, []
    ids = [row.id for row in found]
    session.execute(delete(IMAGES).where(IMAGES.c.job_id.in_(ids)))
    purged = rows_matched(session, delete(JOBS).where(JOBS.c.id.in_(ids)))
    return purged, [row.id for row in found if row.document_key is not None]


def document_keys(session: Session, job_ids: Sequence[str]) -> dict[str, str | None]:
    """The jobs of ``job_ids`` that exist, with their document's key (None: let go of)."""
    if not job_ids:
        return {}
    query = select(JOBS.c.id, JOBS.c.document_key).where(JOBS.c.id.in_(job_ids))
    return {row.id: row.document_key for row in session.execute(query)}


def requeue_expired(
    session: Session, *, keep_images: bool = False, batch: int = 1000
) -> tuple[int, int]:
    """Return up to ``batch`` jobs whose lease ran out to the queue, or fail them once out of
    attempts; (requeued, failed). Locked rows (a server cut off mid-write holds its locks until
    the database drops its session) are skipped: the next round takes them."""
    now = utcnow()
    expired = (JOBS.c.status == RUNNING, JOBS.c.lease_until < now)
    candidates = select(
        JOBS.c.id, JOBS.c.attempts >= JOBS.c.max_attempts, JOBS.c.webhook_url
    ).where(*expired)
    found = session.execute(_skip_locked(session, candidates.limit(batch))).all()
    exhausted_ids = [job_id for job_id, exhausted, _url in found if exhausted]
    retry_ids = [job_id for job_id, exhausted, _url in found if not exhausted]
    failed = requeued = 0
    if exhausted_ids:
        failed = _update(
            session,
            JOBS.c.id.in_(exhausted_ids),
            *expired,
            status=JobStatus.FAILED.value,
            finished_at=now,
            lease_until=None,
            error_code="attempts_exhausted",
            error_message="gave up after the last allowed attempt (OCR_MAX_ATTEMPTS): "
            "the OCR worker stopped answering every time it read this image",
            # The sweep deletes the document (see blob_sweep), unless it is kept.
            **({} if keep_images else {"document_key": None}),
        )
        if not keep_images:
            session.execute(delete(IMAGES).where(IMAGES.c.job_id.in_(exhausted_ids)))
        # The rows were locked (or this is SQLite's only writer): every one was failed.
        hooked = [job_id for job_id, exhausted, url in found if exhausted and url is not None]
        _queue_deliveries(session, dict.fromkeys(hooked, JobStatus.FAILED), now)
    if retry_ids:
        requeued = _update(
            session,
            JOBS.c.id.in_(retry_ids),
            *expired,
            status=QUEUED,
            worker_id=None,
            lease_until=None,
            error_code="lease_expired",
            error_message="the worker running this job stopped answering; retrying",
        )
    return requeued, failed


# -- webhook deliveries: the outbox, written where jobs end, claimed like jobs ----------------


def new_message_id() -> str:
    """A delivery's ``webhook-id``: the same on every attempt, so receivers can drop repeats."""
    return "msg_" + uuid.uuid4().hex


def _queue_deliveries(
    session: Session, ended: dict[str, JobStatus], now: datetime | None = None
) -> None:
    """A delivery, due now, of each ended job's event, in the transaction that ends the jobs."""
    if not ended:
        return
    now = now or utcnow()
    rows = [
        {
            "id": new_message_id(),
            "job_id": job_id,
            "event": f"job.{status.value}",
            "status": PENDING,
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for job_id, status in ended.items()
    ]
    session.execute(insert(DELIVERIES), rows)


def claim_deliveries(
    session: Session, *, sender_id: str, lease_s: float, limit: int
) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries, the longest due first, each an attempt leased for
    ``lease_s`` to ``sender_id`` (claimed like jobs: SKIP LOCKED, or a compare-and-set)."""
    if limit < 1:
        return []
    now = utcnow()
    due = (DELIVERIES.c.status == PENDING, DELIVERIES.c.next_attempt_at <= now)
    candidates = select(DELIVERIES.c.id).where(*due).order_by(DELIVERIES.c.next_attempt_at)
    ids = list(session.scalars(_skip_locked(session, candidates.limit(limit))).all())
    if not ids:
        return []
    rows_matched(
        session,
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(ids), *due)
        .values(
            next_attempt_at=now + timedelta(seconds=lease_s),
            claimed_by=sender_id,
            attempts=DELIVERIES.c.attempts + 1,
        ),
    )
    claimed = session.execute(
        select(DELIVERIES).where(
            DELIVERIES.c.id.in_(ids),
            DELIVERIES.c.claimed_by == sender_id,
            DELIVERIES.c.status == PENDING,
        )
    ).all()
    job_ids = {row.job_id for row in claimed}
    jobs = {
        row.id: Job.from_row(row)
        for row in session.execute(select(*_job_columns()).where(JOBS.c.id.in_(job_ids)))
    }
    return [
        ClaimedDelivery(row.id, row.event, row.created_at, row.attempts, jobs[row.job_id])
        for row in claimed
    ]


def record_attempts(
    session: Session, *, sender_id: str, attempts: Sequence[DeliveryAttempt]
) -> list[str]:
    """Write how each attempt ``sender_id`` still holds went; the delivery ids written, in the
    order given. One left out lost its lease: the later attempt's outcome is the one recorded."""
    if not attempts:
        return []
    by_id = {attempt.delivery_id: attempt for attempt in attempts}
    rows = session.execute(
        select(DELIVERIES.c.id, DELIVERIES.c.attempts)
        .where(
            DELIVERIES.c.id.in_(by_id),
            DELIVERIES.c.claimed_by == sender_id,
            DELIVERIES.c.status == PENDING,
        )
        .with_for_update()
    )
    held = [key for key, number in rows if by_id[key].attempt == number]
    if not held:
        return []
    per_delivery = functools.partial(_per_id, DELIVERIES.c.id)
    chosen = [by_id[key] for key in held]
    rows_matched(
        session,
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(held))
        .values(
            status=per_delivery({a.delivery_id: a.status.value for a in chosen}),
            next_attempt_at=per_delivery({a.delivery_id: a.next_attempt_at for a in chosen}),
            last_attempt_at=utcnow(),
            last_status=per_delivery({a.delivery_id: a.http_status for a in chosen}),
            last_error=per_delivery(
                {a.delivery_id: None if a.error is None else a.error[:255] for a in chosen}
            ),
        ),
    )
    return [attempt.delivery_id for attempt in attempts if attempt.delivery_id in set(held)]


def job_deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    """The webhook deliveries of a job, oldest first."""
    query = (
        select(DELIVERIES).where(DELIVERIES.c.job_id == job_id).order_by(DELIVERIES.c.created_at)
    )
    return [WebhookDelivery.from_row(row) for row in session.execute(query)]


def count_pending_deliveries(session: Session) -> int:
    """Deliveries not yet delivered nor given up (read from the claim index)."""
    query = select(func.count()).select_from(DELIVERIES).where(DELIVERIES.c.status == PENDING)
    return int(session.execute(query).scalar_one())
