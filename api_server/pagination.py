"""``GET /v1/jobs`` a page at a time: its ``status``, ``limit`` and ``cursor`` read, the next
cursor made (the last job's creation time and id, base64url: opaque to clients)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from ocr_common.models import Job, JobStatus
from ocr_common.options import invalid_option, is_decimal

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def status_filter(value: str | None) -> JobStatus | None:
    if value in (None, ""):
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise invalid_option(
            "status", f"{value[:20]!r} is not one of " + ", ".join(s.value for s in JobStatus)
        ) from None


def page_size(value: str | None) -> int:
    if value in (None, ""):
        return DEFAULT_PAGE_SIZE
    if not is_decimal(value) or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise invalid_option("limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(value)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[datetime, str] | None:
    if value in (None, ""):
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        created, job_id = raw.split("|")
        return datetime.fromisoformat(created), str(uuid.UUID(job_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_option(
            "cursor", "not a cursor this API gave; pass next_cursor as it came"
        ) from None


def next_cursor(jobs: list[Job], limit: int) -> str | None:
    """The cursor after a page read with ``limit + 1`` rows: None when none was left over."""
    if len(jobs) <= limit:
        return None
    return encode_cursor(jobs[limit - 1].created_at, jobs[limit - 1].id)
