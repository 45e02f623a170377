"""Start-up and migrations with a database that is down, refuses the SQL, or defaults to latin1.

On private MariaDB servers of this test session, never the shared one.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ocr_common.db import alembic_config
from ocr_testkit.mariadb_server import PrivateMariaDB
from ocr_testkit.pages import HELLO_PNG, b64
from ocr_testkit.stack import BIN_DIR, Stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

# Long enough to ride out the outage; short enough to fail the test in time if not.
STARTUP_WAIT_S = "60"
OUTAGE_S = 6.0
# Every migration, in order (their files are named after their revisions).
ALL_REVISIONS = sorted(
    path.name.split("_")[0]
    for path in (Path(__file__).resolve().parents[2] / "ocr_common/migrations/versions").glob(
        "0*.py"
    )
)


def run_migrate(stack: Stack, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "ocr-migrate")],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_both_services_wait_for_a_database_that_comes_up_late(
    private_mariadb: PrivateMariaDB, fault_db_url: str, tmp_path: Path
) -> None:
    stack = Stack(fault_db_url, tmp_path, OCR_STARTUP_WAIT_S=STARTUP_WAIT_S)
    try:
        assert run_migrate(stack).returncode == 0
        private_mariadb.stop(signal.SIGTERM)
        stack.ocr.start()
        stack.api.start()
        # Both have tried the database and wait (under load, starting takes seconds).
        for service in (stack.ocr, stack.api):
            wait_until(lambda s=service: "not reachable yet" in s.log_text(), 60, "a first try")
        time.sleep(OUTAGE_S)
        # Before: both exited at once with "cannot reach the database".
        for service in (stack.ocr, stack.api):
            assert service.proc is not None and service.proc.poll() is None, service.log_text()
        private_mariadb.start()
        stack.ocr.wait_healthy(stack.server_url)
        stack.api.wait_healthy(stack.api_url)
        task_id = stack.submit(b64(HELLO_PNG))
        assert "Hello" in stack.result(task_id)
        assert "not reachable yet" in stack.logs()
    finally:
        stack.stop()
        if not private_mariadb.running:
            private_mariadb.start()


def test_migrate_waits_for_the_database_then_applies_each_revision(
    private_mariadb: PrivateMariaDB, tmp_path: Path
) -> None:
    url = private_mariadb.create_database()
    stack = Stack(url, tmp_path, OCR_STARTUP_WAIT_S=STARTUP_WAIT_S)
    private_mariadb.stop(signal.SIGTERM)
    try:
        stack.migrate.start()
        wait_until(lambda: "not reachable yet" in stack.migrate.log_text(), 60, "a first try")
        time.sleep(OUTAGE_S)
        assert stack.migrate.proc is not None and stack.migrate.proc.poll() is None
        private_mariadb.start()
        assert stack.migrate.proc.wait(90) == 0, stack.migrate.log_text()
    finally:
        if not private_mariadb.running:
            private_mariadb.start()
    log = stack.migrate.log_text()
    assert "not reachable yet" in log
    applied = [line.split()[2].rstrip(":") for line in log.splitlines() if " applied " in line]
    assert applied == ALL_REVISIONS, log


def test_migrate_stops_at_once_on_an_sql_error_and_says_where_it_stopped(
    private_mariadb: PrivateMariaDB, tmp_path: Path
) -> None:
    url = private_mariadb.create_database()
    command.upgrade(alembic_config(url), "0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        # In the way of revision 0003, which adds this column.
        conn.execute(text("ALTER TABLE jobs ADD COLUMN options TEXT"))
    engine.dispose()
    stack = Stack(url, tmp_path, OCR_STARTUP_WAIT_S=STARTUP_WAIT_S)
    started = time.monotonic()
    result = run_migrate(stack)
    elapsed = time.monotonic() - started
    # Before: every error was retried as "not reachable" for the whole wait.
    assert result.returncode == 1, result
    assert elapsed < 20, (elapsed, result.stderr)
    assert "not reachable" not in result.stderr
    assert "0003" in result.stderr and "not retried" in result.stderr, result.stderr
    assert "Duplicate column" in result.stderr, result.stderr
    assert "at revision 0002" in result.stderr, result.stderr


def test_migrate_creates_every_table_in_utf8mb4_on_a_latin1_server(
    latin1_mariadb: PrivateMariaDB, tmp_path: Path
) -> None:
    url = latin1_mariadb.create_database(charset=None)
    name = make_url(url).database
    with contextlib.closing(latin1_mariadb.connect(name)) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@character_set_database")
        assert cur.fetchone()[0] == "latin1"
    stack = Stack(url, tmp_path)
    # Before: job_images took latin1 and its foreign key to jobs failed (errno 150).
    result = run_migrate(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    with contextlib.closing(latin1_mariadb.connect(name)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, table_collation FROM information_schema.tables "
            "WHERE table_schema = %s",
            (name,),
        )
        tables = dict(cur.fetchall())
        cur.execute(
            "SELECT table_name, column_name, character_set_name FROM information_schema.columns "
            "WHERE table_schema = %s AND character_set_name IS NOT NULL",
            (name,),
        )
        columns = cur.fetchall()
    assert set(tables) == {
        "alembic_version",
        "jobs",
        "job_images",
        "ocr_servers",
        "webhook_deliveries",
    }, tables
    assert all(collation.startswith("utf8mb4") for collation in tables.values()), tables
    assert columns and all(charset == "utf8mb4" for *_, charset in columns), columns
    # And the schema works.
    stack.start_ocr()
    stack.api.start()
    try:
        stack.api.wait_healthy(stack.api_url)
        task_id = stack.submit(b64(HELLO_PNG))
        assert "Hello" in stack.result(task_id)
    finally:
        stack.stop()
