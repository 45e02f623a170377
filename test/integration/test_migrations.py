"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ocr_common import job_store
from ocr_common.blobs import FileStore, JobFiles
from ocr_common.db import (
    alembic_config,
    check_schema,
    head_revision,
    make_engine,
    make_session_factory,
)
from ocr_common.migrate import upgrade
from ocr_common.models import Base
from ocr_common.result import PackedPage
from ocr_common.settings import SettingsError, load_settings
from ocr_server.dispatcher import Dispatcher
from ocr_server.engine import PageTask
from ocr_server.pool import EnginePool
from ocr_testkit.database import scratch_database
from ocr_testkit.pages import packed_reading
from ocr_testkit.waits import wait_until_async


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema yet, on SQLite and on the real MySQL/MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    base = make_url(request.getfixturevalue("mysql_url"))
    with scratch_database(base.render_as_string(hide_password=False), "ocr_test_old") as url:
        yield url


def test_a_job_queued_before_the_blob_store_is_read_after_the_upgrade(
    empty_url: str, tmp_path: Path
) -> None:
    # The schema and the rows as the code before migration 0010 left them: the document in
    # job_images.
    command.upgrade(alembic_config(empty_url), "0009")
    engine = create_engine(empty_url)
    job_id = "0b7e54d8-4f59-4f4e-9d0a-3c4b0f6b5a11"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, status, kind, created_at, attempts, max_attempts, "
                "image_bytes, api, options, pages_total, pages_done) VALUES (:id, 'queued', "
                "'async', :now, 0, 3, 9, 'original', :options, 1, 0)"
            ),
            {"id": job_id, "now": job_store.utcnow(), "options": '{"pages": [1]}'},
        )
        conn.execute(
            text("INSERT INTO job_images (job_id, data) VALUES (:id, :data)"),
            {"id": job_id, "data": b"old bytes"},
        )
    engine.dispose()
    upgrade(empty_url)
    engine = make_engine(empty_url)
    sessions = make_session_factory(engine)
    seen: list[bytes] = []

    class Recorder:
        def recognize_page(self, task: PageTask, abandoned: object = None) -> PackedPage:
            seen.append(task.document)
            return packed_reading(task.page, "read\n")

    # Documents not kept: the old row goes once the job is read.
    settings = load_settings(lease_s=3, poll_interval_s=0.05, keep_images=False)
    files = JobFiles(FileStore(tmp_path / "blobs"))
    dispatcher = Dispatcher(sessions, EnginePool([Recorder()]), settings, files)

    def ended() -> bool:
        with sessions() as session:
            job = job_store.get_job(session, job_id)
        return job is not None and job.status.is_final

    async def run() -> None:
        dispatcher.start()
        try:
            await wait_until_async(ended, 20, "the old job to end")
        finally:
            await dispatcher.stop(grace_s=5)

    try:
        asyncio.run(run())
        with sessions() as session:
            job = job_store.get_job(session, job_id)
            left = session.execute(text("SELECT COUNT(*) FROM job_images")).scalar_one()
    finally:
        engine.dispose()
    assert seen == [b"old bytes"]
    assert job is not None and (job.status.value, job.text) == ("succeeded", "read\n")
    assert left == 0


@pytest.mark.mysql
def test_two_migrations_at_once_take_turns(mysql_url: str) -> None:
    # Two releases at once (a Job and a person): before, one failed on "Table 'jobs' already
    # exists" and was told to undo part of a revision the other was applying.
    base = make_url(mysql_url).render_as_string(hide_password=False)
    with scratch_database(base, "ocr_test_twice") as url:
        env = {**os.environ, "OCR_DATABASE_URL": url}
        command = [sys.executable, "-m", "ocr_common.migrate"]
        runs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=300)[0].decode() for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        # One applied every revision; the other, once it had the lock, found none pending.
        applied = sorted(output.count(" applied ") for output in outputs)
        every = list(ScriptDirectory.from_config(alembic_config(url)).walk_revisions())
        assert applied == [0, len(every)], outputs
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
            assert revision == head_revision()
        finally:
            engine.dispose()


def test_a_database_migrated_by_a_newer_release_is_named_as_such(tmp_path: Path) -> None:
    # A rollback of the code: the database is at a revision this code has no file for. Before,
    # the services said to run ocr-migrate, and ocr-migrate "No such revision or branch".
    url = f"sqlite:///{tmp_path}/newer.db"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    with pytest.raises(SettingsError, match="0999, which this code does not know"):
        check_schema(engine)
    engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "ocr_common.migrate"],
        env={**os.environ, "OCR_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "0999, which this code does not know" in done.stderr and "newer release" in done.stderr
