"""The cursor of GET /v1/jobs reads back as the job it was made from; any other is a 400."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import pytest

from api_server.pagination import decode_cursor, encode_cursor
from ocr_common.errors import BadRequest

CREATED = datetime(2026, 11, 30, 1, 2, 3, 456789)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_a_cursor_reads_back_as_the_job_it_was_made_from() -> None:
    job_id = str(uuid.uuid4())
    cursor = encode_cursor(CREATED, job_id)
    assert "=" not in cursor and decode_cursor(cursor) == (CREATED, job_id)


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
