"""Fixtures shared by every layer: databases (SQLite file and the real MySQL/MariaDB); the logs
of the processes a failing test used, in its report."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.blobs import FileStore, JobFiles
from ocr_common.db import make_engine, make_session_factory
from ocr_common.migrate import upgrade
from ocr_testkit.ast_race import serialize_ast_parse
from ocr_testkit.database import empty_tables, scratch_database
from ocr_testkit.mariadb_server import PrivateMariaDB
from ocr_testkit.s3_server import S3Unavailable, SeaweedS3
from ocr_testkit.stack import Stack

serialize_ast_parse()

MYSQL_URL_VAR = "OCR_TEST_DATABASE_URL"


def _mysql_unavailable(reason: str) -> None:
    if os.environ.get("OCR_REQUIRE_MYSQL") == "1":
        pytest.fail(f"MySQL is required (OCR_REQUIRE_MYSQL=1) but {reason}")
    pytest.skip(f"MySQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh, migrated database of our own on the MySQL/MariaDB server, dropped at the end."""
    base = os.environ.get(MYSQL_URL_VAR)
    if not base:
        _mysql_unavailable(f"{MYSQL_URL_VAR} is not set")
    assert base is not None
    url = make_url(base)
    with contextlib.ExitStack() as scratch:
        try:
            test_url = scratch.enter_context(scratch_database(base, url.database or "ocr_test"))
        except Exception as exc:  # noqa: BLE001 - turned into a skip or a failure
            _mysql_unavailable(f"cannot create a database at {url.host}:{url.port}: {exc}")
        upgrade(test_url)
        yield test_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once for the session (all migrations take about 0.45 s)."""
    path = tmp_path_factory.mktemp("template") / "ocr.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database of the test's own: a copy of the session's template."""
    path = tmp_path / "ocr.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on SQLite and on the real MySQL/MariaDB."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("mysql_url"))


@pytest.fixture
def db_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    empty_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)


@pytest.fixture
def files(tmp_path: Path) -> JobFiles:
    """A blob store of the test's own: a folder (the S3 one is tested in test_blobs.py)."""
    return JobFiles(FileStore(tmp_path / "blobs"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) for the session; boto3 in this process, and the services
    the tests start, reach it through the AWS_* variables it sets."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except S3Unavailable as exc:
        # It is in the dev lock: missing, the S3 backend would go untested.
        pytest.fail(f"no S3 server for the blob store's tests: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        try:
            yield server
        finally:
            server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("service logs", value.logs()[-20000:]))
            if isinstance(value, PrivateMariaDB):
                report.sections.append(("mariadbd log", value.log_text()[-5000:]))
            if isinstance(value, SeaweedS3):
                report.sections.append(("weed log", value.log_text()[-5000:]))
    return report
