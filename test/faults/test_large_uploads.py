"""Uploads near the limit, on a MariaDB with its default max_allowed_packet (16 MiB): their
bytes go to the blob store, never to the database, so no upload meets the packet.

Before the blob store, PyMySQL sent an 8.5 MB upload as 17 MB of hex, which the server refused
by dropping the connection; then as its own bytes, escaped, where a 10 MB document of
backslashes still did not fit (a 413). Never "database unavailable" (a 503 that clients retry
for ever).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pymysql
import pytest
import requests
from PIL import Image
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import JobFiles
from ocr_common.db import check_database, is_connection_error, is_packet_too_large
from ocr_common.errors import PayloadTooLarge
from ocr_common.settings import MIB, load_settings
from ocr_testkit.mariadb_server import PrivateMariaDB
from ocr_testkit.pages import b64
from ocr_testkit.scenarios import rows
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

PACKET = 16 * MIB
BMP_TYPE = {"Content-Type": "image/bmp"}


@pytest.fixture(scope="module")
def fault_db_url(default_packet_mariadb: PrivateMariaDB) -> str:
    """This module's database (and its stack's) is on the 16 MiB server."""
    return default_packet_mariadb.create_database()


@pytest.fixture(scope="module")
def migrated(stack: Stack, fault_db: Engine) -> Iterator[Engine]:
    yield fault_db


def noise_bmp(width: int = 1900, height: int = 1500) -> bytes:
    """An RGB BMP of random pixels: 8.55 MB that no compression shrinks."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "BMP")
    return out.getvalue()


def backslash_bmp(side: int = 3200) -> bytes:
    """A grey BMP (10.2 MB, under the 10 MiB limit) whose every pixel is the byte of a
    backslash: each one escaped, it is twice as large as a statement."""
    out = io.BytesIO()
    Image.new("L", (side, side), 0x5C).save(out, "BMP")
    return out.getvalue()


def received_bytes(session: Session) -> int:
    query = text("SHOW SESSION STATUS LIKE 'Bytes_received'")
    return int(session.execute(query).one()[1])


def test_a_document_goes_to_the_blob_store_and_not_to_the_database(
    migrated: Engine, files: JobFiles
) -> None:
    document = os.urandom(8_500_000)
    sessions = sessionmaker(migrated)
    stored = files.store_document(document)
    with sessions.begin() as session:
        before = received_bytes(session)
        job = job_store.create_job(session, document=stored, max_attempts=1)
        sent = received_bytes(session) - before
    # The job's row, and the status query itself: a few hundred bytes.
    assert sent < 4096
    assert files.read_document(stored.key) == document
    assert rows(migrated, [job.id])[job.id].image_bytes == len(document)


def test_an_upload_over_half_the_packet_is_stored_on_both_apis(
    stack: Stack, migrated: Engine
) -> None:
    document = noise_bmp()
    assert len(document) > PACKET // 2
    queued = requests.post(stack.url("/v1/jobs"), data=document, headers=BMP_TYPE, timeout=60)
    assert queued.status_code == 202, queued.text
    compat = requests.post(stack.url("/image"), json={"image_data": b64(document)}, timeout=60)
    assert compat.status_code == 200, compat.text
    ids = [queued.json()["id"], compat.json()["task_id"]]
    for job_id in ids:
        assert rows(migrated, [job_id])[job_id].image_bytes == len(document)
        # Noise is no text: nothing to wait for.
        requests.delete(stack.url(f"/v1/jobs/{job_id}"), timeout=30)


def test_an_upload_whose_escapes_passed_the_packet_is_stored_now(
    stack: Stack, migrated: Engine
) -> None:
    # Every byte a backslash: 20 MB as an escaped SQL literal, a 413 too_large_for_database
    # while documents went to MySQL.
    document = backslash_bmp()
    assert len(document) < 10 * MIB
    answer = requests.post(stack.url("/v1/jobs"), data=document, headers=BMP_TYPE, timeout=60)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert stack.files.read_document(JobFiles.document_key(job_id)) == document
    requests.delete(stack.url(f"/v1/jobs/{job_id}"), timeout=30)


def test_an_upload_limit_past_the_packet_is_no_start_up_error(migrated: Engine) -> None:
    # Documents never travel to the database: the packet bounds results only.
    assert check_database(migrated, load_settings(max_upload_bytes=64 * MIB)) == PACKET


def test_a_statement_the_server_refuses_for_its_size_is_told_apart_from_an_outage(
    default_packet_mariadb: PrivateMariaDB,
) -> None:
    # The server answers 1153 when it reads the packet's length (often, through SQLAlchemy's
    # connections, its reset overtakes the answer: hence the check before sending, above).
    with default_packet_mariadb.connect() as conn, pytest.raises(pymysql.OperationalError) as info:
        conn.cursor().execute("SELECT '" + "a" * PACKET + "'")
    refused = OperationalError("SELECT ...", None, info.value)
    assert is_packet_too_large(refused)
    assert not is_connection_error(refused)
    assert not is_packet_too_large(PayloadTooLarge("x"))
