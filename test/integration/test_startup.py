"""Both services refuse to start, with a message naming the fix, on a bad setting or schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocr_testkit.waits import wait_until

BIN = Path(sys.executable).parent


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [str(BIN / command)], env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("command", ["ocr-api", "ocr-server"])
def test_refuses_a_database_whose_schema_is_behind(command: str, tmp_path: Path) -> None:
    result = run(command, {"OCR_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"})
    assert result.returncode == 2
    assert "ocr-migrate" in result.stderr


@pytest.mark.parametrize("command", ["ocr-api", "ocr-server", "ocr-migrate"])
def test_refuses_an_invalid_setting_naming_it(command: str) -> None:
    result = run(command, {"OCR_WORKERS": "zero"})
    assert result.returncode == 2
    assert "OCR_WORKERS" in result.stderr


def test_refuses_an_unreachable_database() -> None:
    result = run(
        "ocr-api",
        {
            "OCR_DATABASE_URL": "mysql+pymysql://nobody:x@127.0.0.1:1/ocr",
            "OCR_STARTUP_WAIT_S": "1",
        },
    )
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr
    assert "OCR_STARTUP_WAIT_S" in result.stderr
    assert "x@" not in result.stderr  # the password is not printed


@pytest.mark.parametrize("command", ["ocr-api", "ocr-server"])
def test_refuses_a_blob_store_it_cannot_write_to(
    command: str, sqlite_url: str, tmp_path: Path
) -> None:
    # A folder that cannot be made: its parent is a file.
    (tmp_path / "a-file").write_text("")
    env = {
        "OCR_DATABASE_URL": sqlite_url,
        "OCR_BLOB_URL": f"file:{tmp_path / 'a-file' / 'blobs'}",
        "OCR_STARTUP_WAIT_S": "1",
    }
    result = run(command, env)
    assert result.returncode == 2
    assert "OCR_BLOB_URL" in result.stderr and "cannot write" in result.stderr


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "file://host/x", "s3://UPPER/x", "s3://bucket/a/../b", "s3://b"]
)
def test_refuses_a_blob_url_naming_no_store(url: str) -> None:
    result = run("ocr-api", {"OCR_BLOB_URL": url})
    assert result.returncode == 2
    assert "OCR_BLOB_URL" in result.stderr


def test_migrate_then_schema_is_current(tmp_path: Path) -> None:
    env = {"OCR_DATABASE_URL": f"sqlite:///{tmp_path}/ocr.db"}
    assert run("ocr-migrate", env).returncode == 0
    # Running it again is harmless.
    assert run("ocr-migrate", env).returncode == 0


def test_a_new_api_process_opens_its_connections_before_its_first_request(
    database_url: str, tmp_path: Path
) -> None:
    # gunicorn loads the app in each worker after the fork; the worker then serves at once.
    from sqlalchemy import Engine

    from api_server.serve import GunicornApp
    from ocr_common.settings import load_settings

    settings = load_settings(database_url=database_url, blob_url=f"file:{tmp_path / 'blobs'}")
    front = GunicornApp(settings).load()
    engine: Engine = front.app.extensions["ocr_services"].sessions.kw["bind"]
    try:
        # One connection for each thread, kept: none is closed on its way back to the pool.
        assert engine.pool.size() == settings.api_threads  # type: ignore[attr-defined]
        wait_until(
            lambda: engine.pool.checkedin() == settings.api_threads,  # type: ignore[attr-defined]
            10,
            "a connection for each thread",
        )
    finally:
        engine.dispose()


def test_a_new_api_process_serves_at_once_when_its_database_hangs(tmp_path: Path) -> None:
    # A proxy in front of a hung database: connections are taken, no greeting ever comes.
    # gunicorn's worker timeout counts while the app loads: the warm-up must not hold it.
    from api_server.serve import GunicornApp
    from ocr_common.settings import load_settings

    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        port = silent.getsockname()[1]
        settings = load_settings(
            database_url=f"mysql+pymysql://x:y@127.0.0.1:{port}/ocr", blob_url=f"file:{tmp_path}"
        )
        began = time.monotonic()
        GunicornApp(settings).load()
        assert time.monotonic() - began < 5


def test_a_new_api_process_starts_even_if_its_database_went_away(tmp_path: Path) -> None:
    from api_server.serve import GunicornApp
    from ocr_common.settings import load_settings

    settings = load_settings(
        database_url="mysql+pymysql://nobody:x@127.0.0.1:1/ocr", blob_url=f"file:{tmp_path}"
    )
    front = GunicornApp(settings).load()  # the warm-up fails quietly: requests will retry
    assert front.app.extensions["ocr_services"].sessions.kw["bind"].pool.checkedin() == 0


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("ocr-api", "OCR_API_BIND"),
        ("ocr-api", "OCR_METRICS_BIND"),
        ("ocr-server", "OCR_SERVER_BIND"),
    ],
)
def test_an_address_taken_is_refused_naming_its_setting(
    command: str, variable: str, tmp_path: Path
) -> None:
    # gunicorn retried for 5 s and said "Can't connect", naming no setting.
    env = {
        "OCR_DATABASE_URL": f"sqlite:///{tmp_path}/ocr.db",
        "OCR_BLOB_URL": f"file:{tmp_path}/blobs",
        "OCR_WORKERS": "1",
    }
    assert run("ocr-migrate", env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            other = f"127.0.0.1:{free.getsockname()[1]}"
        result = run(
            command, {**env, "OCR_API_BIND": other, "OCR_SERVER_BIND": other, variable: bind}
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve on {bind}" in result.stderr and f"set {variable}" in result.stderr
