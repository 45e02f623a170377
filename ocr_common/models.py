"""ORM tables and the frozen ``Job`` value the rest of the code passes around."""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import JobFailed
from .options import ORIGINAL_API_OPTIONS, OcrOptions
from .result import PackedPage, store_pages
from .webhooks import WEBHOOK_URL_MAX_CHARS

# MySQL's plain DATETIME drops microseconds (jobs would tie in FIFO order), TEXT holds 64 KiB and
# BLOB 64 KiB: use the wide variants there.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# 16 MiB: the options of a document of OCR_MAX_PAGES=10000 pages, listed, pass TEXT's 64 KiB.
MediumText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
LongBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
# Compared byte for byte (MySQL's default collation ignores case).
BinaryKey = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


class JobStatus(enum.StrEnum):
    """Where a job is in its life; see docs/how-it-works.md "Job lifecycle"."""

    QUEUED = "queued"  # accepted and committed, waiting for an engine
    RUNNING = "running"  # claimed by a worker that holds a lease on it
    SUCCEEDED = "succeeded"  # text written; image deleted
    FAILED = "failed"  # given up, with error_code and error_message
    CANCELED = "canceled"  # withdrawn by its owner while queued or running (DELETE /v1/jobs)

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class JobApi(enum.StrEnum):
    """Which API made a job: only what its views show differs (the original API's, the text)."""

    ORIGINAL = "original"  # /image, /image-sync: the first page with default options
    V1 = "v1"  # /v1/jobs, /v1/ocr


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    """One row per job (docs/how-it-works.md "Database schema")."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False, default="async")
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    image_bytes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    text: Mapped[str | None] = mapped_column(LongText, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    api: Mapped[str] = mapped_column(
        String(8), nullable=False, default=JobApi.V1.value, server_default=JobApi.V1.value
    )
    options: Mapped[str | None] = mapped_column(MediumText, nullable=True)
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pages_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pages_done: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Results stored before migration 0011, in the old shape (JSON text, pages with their
    # hOCR and TSV): read by ``result.legacy_pages``. Newer jobs keep ``page_results``.
    result: Mapped[str | None] = mapped_column(LongText, nullable=True, deferred=True)
    # The pages of a succeeded job, packed and compressed (``result.store_pages``).
    page_results: Mapped[bytes | None] = mapped_column(LongBlob, nullable=True, deferred=True)
    idempotency_key: Mapped[str | None] = mapped_column(BinaryKey, nullable=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where to POST when the job ends (docs/webhooks.md); null: nowhere.
    webhook_url: Mapped[str | None] = mapped_column(String(WEBHOOK_URL_MAX_CHARS), nullable=True)
    # The key of the job's document in the blob store (docs/operations.md "Blob store"); null
    # once it is deleted, and for jobs queued before migration 0010 (whose bytes are in
    # job_images).
    document_key: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_status_lease", "status", "lease_until"),
        Index("ix_jobs_sha256_status", "image_sha256", "status"),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ux_jobs_idempotency_key", "idempotency_key", unique=True),
        Index("ix_jobs_status_owner", "status", "owner"),
        Index("ix_jobs_finished", "finished_at"),  # the purge of expired jobs
    )


class JobImageRow(Base):
    """The documents of jobs queued before migration 0010 (newer ones are in the blob store)."""

    __tablename__ = "job_images"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LongBlob, nullable=False)


class OcrServerRow(Base):
    """One row per OCR server process, kept fresh while it runs."""

    __tablename__ = "ocr_servers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    engines: Mapped[int] = mapped_column(Integer, nullable=False)
    languages: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    stopped_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)

    # Who is alive, who was seen last, whose rows are old: each a range of this index.
    __table_args__ = (Index("ix_ocr_servers_last_seen", "last_seen_at"),)


class DeliveryStatus(enum.StrEnum):
    """Where a webhook delivery is; see docs/webhooks.md."""

    PENDING = "pending"  # to be sent (again) at next_attempt_at, or being sent until then
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: the schedule ran out, or the address is refused


class WebhookDeliveryRow(Base):
    """The outbox: one row per event to POST to a job's ``webhook_url``, written in the
    transaction that ends the job, and claimed by any OCR server's sender."""

    __tablename__ = "webhook_deliveries"

    # The webhook-id header, the same on every attempt.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When it may be claimed: the next try, or while a sender holds it, the end of its lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # The sender that made the last attempt (or is making it).
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (
        Index("ix_webhook_deliveries_claim", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_job", "job_id"),
    )


@dataclass(frozen=True)
class WebhookDelivery:
    """A read-only snapshot of one delivery, as the job shows it."""

    id: str
    event: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    # While it is pending: when it is tried next (or, during an attempt, when a sender that
    # vanished would lose it).
    next_attempt_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> WebhookDelivery:
        values = {field.name: getattr(row, field.name) for field in fields(cls)}
        return cls(**{**values, "status": DeliveryStatus(row.status)})


@dataclass(frozen=True)
class Job:
    """A read-only snapshot of one job row."""

    id: str
    status: JobStatus
    kind: str
    owner: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    max_attempts: int
    worker_id: str | None
    text: str | None
    error_code: str | None
    error_message: str | None
    options: OcrOptions | None = None
    format: str | None = None
    pages_total: int | None = None
    pages_done: int | None = None
    request_sha256: str | None = None
    api: JobApi = JobApi.V1
    webhook_url: str | None = None
    document_key: str | None = None

    def failure(self, noun: str = "job") -> JobFailed | None:
        """Why the job ended without a result (failed or canceled), as the error both APIs
        answer; None while it may still succeed, or once it has. ``noun`` names it."""
        if self.status not in (JobStatus.FAILED, JobStatus.CANCELED):
            return None
        reason = self.error_message or f"the {noun} was {self.status.value}"
        return JobFailed(
            f"{noun} {self.id} {self.status.value}: {reason}",
            code=self.error_code or f"job_{self.status.value}",
        )

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """From an ORM row, a Core row of ``jobs`` or anything with the same attributes."""
        values = {field.name: getattr(row, field.name) for field in fields(cls)}
        values.update(status=JobStatus(row.status), api=JobApi(row.api))
        return cls(**{**values, "options": parse_options_json(row.options)})


def parse_options_json(value: str | None) -> OcrOptions | None:
    return None if value is None else OcrOptions.model_validate_json(value)


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker now holds a lease on: its document (``document_key``, or ``image``: the
    bytes of a job queued before the blob store), options and pages to read."""

    id: str
    attempts: int
    max_attempts: int
    image: bytes | None = None
    document_key: str | None = None
    digest: str | None = None
    owner: str | None = None
    options: OcrOptions = ORIGINAL_API_OPTIONS
    pages: tuple[int, ...] = (1,)
    api: JobApi = JobApi.ORIGINAL
    request_id: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ClaimedJob:
        """From a row of the claim's SELECT (with ``data``: its bytes in ``job_images``)."""
        options = parse_options_json(row.options) or ORIGINAL_API_OPTIONS
        return cls(
            id=row.id,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            image=row.data,
            document_key=row.document_key,
            digest=row.image_sha256,
            owner=row.owner,
            options=options,
            pages=options.pages or tuple(range(1, (row.pages_total or 1) + 1)),
            api=JobApi(row.api),
            request_id=row.request_id,
        )


@dataclass(frozen=True)
class JobOutcome:
    """How a claimed job ended (``job_store.finish_batch``): ``text`` and ``pages`` (None: a
    text reused from a job that kept only its text), or ``error_code`` and ``error_message``."""

    job_id: str
    text: str | None = None
    pages: Sequence[PackedPage] | None = None
    error_code: str | None = None
    error_message: str | None = None
    # The attempt it ended (None: any). A worker cut off, whose job went back to the queue and
    # which claimed it again, must not write the earlier attempt's outcome over the new one.
    attempt: int | None = None

    @property
    def status(self) -> JobStatus:
        return JobStatus.SUCCEEDED if self.error_code is None else JobStatus.FAILED

    @functools.cached_property
    def stored_pages(self) -> bytes | None:
        """The pages as the job row keeps them (packed once, however often asked)."""
        return None if self.pages is None else store_pages(self.pages)


@dataclass(frozen=True)
class DeliveryAttempt:
    """How attempt number ``attempt`` of a delivery went (``job_store.record_attempts``)."""

    delivery_id: str
    attempt: int
    status: DeliveryStatus
    next_attempt_at: datetime | None
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a sender now holds a lease on: its attempt number and the job it tells of."""

    id: str
    event: str
    created_at: datetime
    attempts: int
    job: Job
