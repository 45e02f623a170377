"""End-to-end fixtures: each test module gets its own ocr-server and ocr-api processes.

They run on free ports, on the MySQL/MariaDB database of the ``mysql_url`` fixture, whose tables
are emptied first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from ocr_common.db import make_engine
from ocr_testkit.database import empty_tables
from ocr_testkit.stack import Stack, running_stack


@pytest.fixture(scope="module")
def db_engine_e2e(mysql_url: str) -> Iterator[Engine]:
    """An engine on the e2e database, whose tables are emptied once per module."""
    engine = make_engine(mysql_url)
    empty_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def stack(
    mysql_url: str,
    db_engine_e2e: Engine,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """Both services of this module, with its ``STACK_SETTINGS`` (OCR_* variables) if it has
    any, started on free ports and stopped at its end."""
    settings = getattr(request.module, "STACK_SETTINGS", {})
    with running_stack(mysql_url, tmp_path_factory.mktemp("e2e-logs"), **settings) as stack:
        yield stack
