"""The test database: its tables emptied between tests (the schema stays), the statements sent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, event
from sqlalchemy.engine import Engine

from ocr_common.models import JobImageRow, JobRow


def empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(JobImageRow))
        conn.execute(delete(JobRow))


@contextlib.contextmanager
def statements_sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Each SQL statement sent on ``engine`` inside the block, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", catch)
