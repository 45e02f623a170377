"""End-to-end fixtures: each test module gets its own ocr-server and ocr-api processes.

They run on free ports, on the MySQL/MariaDB database of the ``mysql_url`` fixture, whose tables
are emptied first. The service logs are attached to the report of a failing test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from ocr_common.db import make_engine
from ocr_testkit.database import empty_tables
from ocr_testkit.stack import Stack, start_stack


@pytest.fixture(scope="module")
def db_engine_e2e(mysql_url: str) -> Iterator[Engine]:
    """An engine on the e2e database, whose tables are emptied once per module."""
    engine = make_engine(mysql_url)
    empty_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def stack(
    mysql_url: str, db_engine_e2e: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Both services of this module, started on free ports and stopped at its end."""
    yield from start_stack(mysql_url, tmp_path_factory)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, Stack):
                report.sections.append(("service logs", value.logs()[-20000:]))
    return report
