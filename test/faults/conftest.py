"""Fault fixtures: a private MariaDB server (never the shared one) and stacks on it.

Every test module here gets a database of its own on the private server, and its own services.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from ocr_common.db import make_engine
from ocr_testkit.mariadb_server import MariaDBUnavailable, PrivateMariaDB
from ocr_testkit.stack import Stack


@pytest.fixture(scope="session")
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A mariadbd of our own (data directory, port, socket), killed at the end."""
    base = tmp_path_factory.mktemp("mariadb")
    server = PrivateMariaDB(base)
    try:
        server.install()
        server.start()
    except MariaDBUnavailable as exc:
        server.kill()
        if os.environ.get("OCR_REQUIRE_MYSQL") == "1":
            pytest.fail(f"a private MariaDB is required but {exc}")
        pytest.skip(f"private MariaDB unavailable: {exc}")
    yield server
    server.kill()
    shutil.rmtree(server.datadir, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_db_url(private_mariadb: PrivateMariaDB) -> str:
    """A fresh database for this module on the private server (migrated by the stack)."""
    if not private_mariadb.running:
        private_mariadb.start()
    return private_mariadb.create_database()


@pytest.fixture(scope="module")
def fault_db(fault_db_url: str) -> Iterator[Engine]:
    engine = make_engine(fault_db_url)
    yield engine
    engine.dispose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("service logs", value.logs()[-20000:]))
            if isinstance(value, PrivateMariaDB):
                report.sections.append(("mariadbd log", value.log_text()[-5000:]))
    return report
