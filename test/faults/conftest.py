"""Fault fixtures: private MariaDB servers (never the shared one) and stacks on them.

Every test module here gets a database of its own on the private server, and its own services.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from ocr_common.db import make_engine
from ocr_testkit.mariadb_server import MariaDBUnavailable, PrivateMariaDB
from ocr_testkit.stack import Stack, running_stack


def _mariadb(base: Path, *extra_args: str) -> Iterator[PrivateMariaDB]:
    """A mariadbd of our own (data directory, port, socket), killed at the end."""
    server = PrivateMariaDB(base, extra_args)
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


@pytest.fixture(scope="session")
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    yield from _mariadb(tmp_path_factory.mktemp("mariadb"))


@pytest.fixture(scope="module")
def latin1_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A second private server whose default character set is latin1."""
    yield from _mariadb(
        tmp_path_factory.mktemp("mariadb-latin1"),
        "--character-set-server=latin1",
        "--collation-server=latin1_swedish_ci",
    )


@pytest.fixture(scope="module")
def default_packet_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A private server with MariaDB's default max_allowed_packet (16 MiB; ours have 64)."""
    yield from _mariadb(tmp_path_factory.mktemp("mariadb-16m"), "--max-allowed-packet=16M")


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


@pytest.fixture(scope="module")
def stack(
    fault_db_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Both services on this module's database, with its ``STACK_SETTINGS`` if it has any."""
    settings = getattr(request.module, "STACK_SETTINGS", {})
    with running_stack(fault_db_url, tmp_path_factory.mktemp("logs"), **settings) as stack:
        yield stack
