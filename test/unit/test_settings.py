"""Settings come from OCR_* variables and refuse bad values with the variable's name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_common.blobs import open_store
from ocr_common.settings import (
    DEFAULT_DATABASE_URL,
    SettingsError,
    hash_api_key,
    load_settings,
    unknown_variables,
)


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OCR_DATABASE_URL", "OCR_WORKERS", "OCR_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.database_url.startswith("sqlite")
    assert settings.workers >= 1
    assert settings.server_url == "http://127.0.0.1:5001"
    assert settings.api_bind == "127.0.0.1:5000"


def test_values_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCR_WORKERS", "3")
    monkeypatch.setenv("OCR_SERVER_URL", "http://ocr:5001/")
    monkeypatch.setenv("OCR_DATABASE_URL", "mysql+pymysql://u:p@db:3306/ocr")
    monkeypatch.setenv("OCR_KEEP_IMAGES", "true")
    settings = load_settings()
    assert settings.workers == 3
    assert settings.server_url == "http://ocr:5001"
    assert not settings.database_url.startswith("sqlite")
    assert settings.keep_images is True


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OCR_WORKERS", "0"),
        ("OCR_WORKERS", "many"),
        ("OCR_DATABASE_URL", "postgres://x"),
        ("OCR_DATABASE_URL", "ocr.db"),
        ("OCR_STALE_WORKERS_S", "0"),
        ("OCR_SERVER_URL", "ocr:5001"),
        ("OCR_API_BIND", "5000"),
        ("OCR_SERVER_BIND", "127.0.0.1:99999"),
        ("OCR_MAX_ATTEMPTS", "0"),
        ("OCR_LEASE_S", "-1"),
        ("OCR_LOG_LEVEL", "LOUD"),
        ("OCR_ENGINE_MAX_MEMORY_MB", "100"),
        ("OCR_RENDER_TIMEOUT_S", "0"),
        # Times that pass as numbers but would overflow what is made of them, or spin.
        ("OCR_LEASE_S", "inf"),
        ("OCR_LEASE_S", "1e9"),
        ("OCR_LEASE_S", "nan"),
        ("OCR_POLL_INTERVAL_S", "0.000000001"),
        ("OCR_SHUTDOWN_GRACE_S", "inf"),
        ("OCR_PAGE_TIMEOUT_S", "1e12"),
        ("OCR_SYNC_TIMEOUT_S", "-inf"),
        ("OCR_STARTUP_WAIT_S", "inf"),
        ("OCR_RESULT_TTL_DAYS", "nan"),
        ("OCR_RATE_LIMIT", "lots"),
        ("OCR_AUTH_FAILURE_LIMIT", "lots"),
        # Key names differing only in case.
        ("OCR_API_KEYS", f"Alice={hash_api_key('a')},alice={hash_api_key('b')}"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://user:pw@db:5432/ocr", "PostgreSQL is not supported"),
        ("postgresql+psycopg://user:pw@db/ocr", "PostgreSQL is not supported"),
        ("postgres://db/ocr", "PostgreSQL is not supported"),
        ("oracle://db/ocr", "'oracle' databases are not supported"),
        ("mssql+pyodbc://db/ocr", "'mssql' databases are not supported"),
        ("mysql+mysqldb://u:p@db/ocr", "the driver 'mysqldb' is not installed"),
        ("sqlite+aiosqlite:///x.db", "the driver 'aiosqlite' is not installed"),
        ("ocr.db", "must be a SQLAlchemy URL"),
    ],
)
def test_an_unsupported_database_says_what_is_supported(
    monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    monkeypatch.setenv("OCR_DATABASE_URL", url)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "OCR_DATABASE_URL" in message and says in message, message
    assert "mysql+pymysql://" in message and "sqlite:///" in message, message


@pytest.mark.parametrize(
    ("url", "used"),
    [
        ("mysql://u:p@db:3306/ocr", "mysql+pymysql://u:p@db:3306/ocr"),
        ("MariaDB://u:p%40x@db/ocr", "mariadb+pymysql://u:p%40x@db/ocr"),
        ("mysql+pymysql://u:p@db/ocr", "mysql+pymysql://u:p@db/ocr"),
        ("sqlite:////tmp/ocr.db", "sqlite:////tmp/ocr.db"),
    ],
)
def test_a_mysql_url_without_a_driver_gets_the_installed_one(
    monkeypatch: pytest.MonkeyPatch, url: str, used: str
) -> None:
    monkeypatch.setenv("OCR_DATABASE_URL", url)
    assert load_settings().database_url == used


def test_sync_timeout_must_exceed_page_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCR_PAGE_TIMEOUT_S", "60")
    monkeypatch.setenv("OCR_SYNC_TIMEOUT_S", "30")
    with pytest.raises(SettingsError, match="OCR_SYNC_TIMEOUT_S"):
        load_settings()


def test_the_recycle_size_must_be_below_the_memory_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCR_ENGINE_MAX_MEMORY_MB", "1024")
    monkeypatch.setenv("OCR_ENGINE_MAX_RSS_MB", "1024")
    with pytest.raises(SettingsError, match="OCR_ENGINE_MAX_RSS_MB .* OCR_ENGINE_MAX_MEMORY_MB"):
        load_settings()
    monkeypatch.setenv("OCR_ENGINE_MAX_RSS_MB", "512")
    settings = load_settings()
    assert (settings.engine_max_rss_mb, settings.engine_max_memory_mb) == (512, 1024)


def test_default_workers_follow_a_container_cpu_quota(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from ocr_common.settings import available_cores

    cpu_max = Path(str(tmp_path)) / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert available_cores(str(cpu_max)) == min(2, available_cores("/nonexistent"))
    cpu_max.write_text("max 100000\n")
    assert available_cores(str(cpu_max)) == available_cores("/nonexistent")


def test_errors_never_echo_secrets_or_the_database_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCR_INTERNAL_TOKEN", "supersecret-token")
    monkeypatch.setenv("OCR_PAGE_TIMEOUT_S", "500")  # a whole-settings error
    with pytest.raises(SettingsError) as whole:
        load_settings()
    assert "supersecret-token" not in str(whole.value)
    monkeypatch.setenv("OCR_DATABASE_URL", "postgresql://user:dbpass123@db/ocr")
    with pytest.raises(SettingsError) as url:
        load_settings()
    assert "dbpass123" not in str(url.value)
    assert "OCR_DATABASE_URL" in str(url.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 32),
        ({"OCR_MAX_BATCH": "100", "OCR_MAX_QUEUED_PER_KEY": "0"}, 100),
        # A request of more images than the rate limit ever allows would be told to retry for
        # ever; so would one the queue cap can never take.
        ({"OCR_RATE_LIMIT": "10/second;1000/hour"}, 10),
        ({"OCR_MAX_QUEUED_PER_KEY": "5"}, 5),
    ],
)
def test_a_request_never_carries_more_images_than_the_limits_allow(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: int
) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert load_settings().max_images_per_request == expected


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.53:5000", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("0.0.0.0:5000", False),
        ("[::]:5000", False),
        ("192.0.2.7:5000", False),
        ("ocr.example:5000", False),
    ],
)
def test_the_api_warns_when_it_listens_beyond_loopback_without_keys(
    bind: str, loopback: bool
) -> None:
    from api_server.serve import exposure_warning

    warning = exposure_warning(load_settings(api_bind=bind))
    assert (warning is None) == loopback
    if warning is not None:
        assert bind in warning and "OCR_API_KEYS" in warning
    keys = load_settings(api_bind=bind, api_keys=hash_api_key("k"))
    assert exposure_warning(keys) is None


def test_an_empty_api_keys_variable_means_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose.yaml passes OCR_API_KEYS through from .env, empty when it is left out there.
    monkeypatch.setenv("OCR_API_KEYS", " ")
    assert load_settings().api_keys is None


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("file:./data/blobs", "the directory data/blobs"),
        ("file:data/blobs", "the directory data/blobs"),
        ("file:///srv/ocr/blobs", "the directory /srv/ocr/blobs"),
        ("file://localhost/srv/ocr/blobs", "the directory /srv/ocr/blobs"),
        ("file:///srv/ocr%20blobs", "the directory /srv/ocr blobs"),
        ("s3://ocr-documents", "s3://ocr-documents/"),
        ("s3://ocr-documents/", "s3://ocr-documents/"),
        ("s3://ocr.documents-1/a/b/", "s3://ocr.documents-1/a/b/"),
        ("s3://ocr-documents/a%2Fb", "s3://ocr-documents/a/b/"),
    ],
)
def test_the_blob_url_names_a_folder_or_a_bucket(url: str, where: str) -> None:
    assert open_store(load_settings(blob_url=url).blob_url).describe() == where


@pytest.mark.parametrize(
    "url",
    [
        "",
        "data/blobs",
        "ftp://host/x",
        "file://host/x",
        "file:",
        "file:///x?y=1",
        "s3://",
        "s3://ab",
        "s3://Upper-Case",
        "s3://under_score",
        "s3://-dash",
        "s3://a..b",
        "s3://bucket/a/../b",
        "s3://bucket/a b",
        "s3://bucket/x?endpoint=http://h",
    ],
)
def test_a_blob_url_naming_no_store_is_refused_by_name(url: str) -> None:
    with pytest.raises(SettingsError, match="OCR_BLOB_URL"):
        load_settings(blob_url=url)


def test_an_ocr_variable_no_setting_reads_is_named_with_the_setting_it_resembles() -> None:
    environ = {
        "OCR_WORKER": "4",  # OCR_WORKERS
        "OCR_LEASE": "10",  # OCR_LEASE_S
        "OCR_WORKERS": "2",
        "OCR_API_KEY": "secret",  # ocr-client's, with no OCR_API_KEYS: the API is open
        "OCR_URL": "http://ocr",  # ocr-client's
        "OCR_TEST_DATABASE_URL": "sqlite://",  # the tests'
        "OCR_API_SERVICE_HOST": "10.0.0.1",  # Kubernetes' links to a Service "ocr-api"
        "OCR_SERVER_PORT_5001_TCP_ADDR": "10.0.0.2",
        "OCR_SERVER_PORT": "tcp://10.0.0.2:5001",
        "OCR_API_PORT": "5400",  # a guess at OCR_API_BIND, not a link (whose value is tcp://)
        "OCR_NOTHING_LIKE_IT": "1",
        "PATH": "/bin",
    }
    warnings = unknown_variables(environ)
    assert warnings == [
        "OCR_API_KEY is ocr-client's variable; the API takes its keys from OCR_API_KEYS "
        "(unset: every caller is answered)",
        "OCR_API_PORT is not a setting, and is ignored; see docs/settings.md",
        "OCR_LEASE is not a setting, and is ignored (did you mean OCR_LEASE_S?); see "
        "docs/settings.md",
        "OCR_NOTHING_LIKE_IT is not a setting, and is ignored; see docs/settings.md",
        "OCR_WORKER is not a setting, and is ignored (did you mean OCR_WORKERS?); see "
        "docs/settings.md",
    ]
    # With the API's own keys set, the client's variable beside them is no slip; set empty (as
    # compose passes it when unset), it is.
    assert unknown_variables({"OCR_API_KEY": "k", "OCR_API_KEYS": "x"}) == []
    assert len(unknown_variables({"OCR_API_KEY": "k", "OCR_API_KEYS": ""})) == 1


def test_ocr_migrate_warns_of_a_misspelt_variable(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "OCR_DATABASE_URL": f"sqlite:///{tmp_path}/ocr.db",
        "OCR_WORKER": "4",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ocr_common.migrate"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OCR_WORKER is not a setting, and is ignored (did you mean OCR_WORKERS?)" in done.stderr


def test_the_wait_for_a_database_is_logged_in_the_format_asked_for() -> None:
    # Before, ocr-migrate and ocr-api logged it as plain text before they set up logging,
    # which a collector of JSON lines cannot read.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {
        "PATH": os.environ["PATH"],
        "OCR_DATABASE_URL": f"mysql+pymysql://u:p@127.0.0.1:{port}/ocr",
        "OCR_STARTUP_WAIT_S": "1",
        "OCR_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ocr_common.migrate"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    # Every line, the last one that says why it stopped too.
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records and all("not reachable yet" in r["message"] for r in records[:-1])
    assert "cannot reach the database" in records[-1]["message"], done.stderr
    assert records[-1]["logger"] == "ocr-migrate"


@pytest.mark.parametrize("command", ["ocr_common.migrate", "api_server.serve", "ocr_server.serve"])
def test_a_setting_refused_is_said_in_the_log_format_asked_for(command: str) -> None:
    env = {"PATH": os.environ["PATH"], "OCR_LOG_FORMAT": "json", "OCR_LEASE_S": "inf"}
    done = subprocess.run(
        [sys.executable, "-m", command], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    [record] = [json.loads(line) for line in done.stderr.splitlines()]
    assert "OCR_LEASE_S" in record["message"] and record["level"] == "ERROR"
