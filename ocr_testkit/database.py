"""The test database's tables, emptied between tests (the schema stays)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.engine import Engine

from ocr_common.models import JobImageRow, JobRow


def empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(JobImageRow))
        conn.execute(delete(JobRow))
