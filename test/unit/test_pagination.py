"""The cursor of GET /v1/jobs reads back as the job it was made from; any other is a 400."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import pytest

from api_server.pagination import decode_cursor, next_cursor
from ocr_common.errors import BadRequest
from ocr_common.models import Job, JobStatus

CREATED = datetime(2026, 11, 30, 1, 2, 3, 456789)


def job(created_at: datetime) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        status=JobStatus.QUEUED,
        kind="async",
        owner=None,
        created_at=created_at,
        started_at=None,
        finished_at=None,
        attempts=0,
        max_attempts=3,
        worker_id=None,
        text=None,
        error_code=None,
        error_message=None,
    )


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_a_cursor_reads_back_as_the_last_job_of_its_page() -> None:
    jobs = [job(CREATED), job(CREATED), job(datetime(2026, 1, 1))]
    cursor = next_cursor(jobs, limit=2)
    assert cursor is not None and "=" not in cursor
    assert decode_cursor(cursor) == (CREATED, jobs[1].id)
    assert next_cursor(jobs[:2], limit=2) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "é",
        b64(f"{CREATED.isoformat()}|not-a-uuid"),
        b64(f"yesterday|{uuid.uuid4()}"),
        b64(f"{CREATED.isoformat()}|{uuid.uuid4()}|more"),
        base64.urlsafe_b64encode(b"\xff\xfe|not utf-8").decode(),
    ],
)
def test_a_cursor_that_is_not_ours_is_a_400_that_names_it(cursor: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor)
    assert caught.value.field == "cursor" and caught.value.code == "invalid_option"
