"""Uploads near the limit, on a MariaDB with its default max_allowed_packet (16 MiB): stored as
their own bytes, or refused with a 413 that says why; never "database unavailable" (a 503 that
clients retry for ever).

PyMySQL sends bytes parameters as hex, twice their size: an 8.5 MB upload, under the default
10 MiB limit, made a 17 MB statement that the server refused by dropping the connection.
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
from ocr_common.db import (
    BYTES_PER_ESCAPE,
    check_packet_size,
    is_connection_error,
    is_packet_too_large,
    largest_upload_bytes,
)
from ocr_common.errors import PayloadTooLarge
from ocr_common.settings import MIB, SettingsError, load_settings
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


def test_a_document_goes_to_the_database_as_its_own_bytes(migrated: Engine) -> None:
    document = os.urandom(8_500_000)
    sessions = sessionmaker(migrated)
    with sessions.begin() as session:
        before = received_bytes(session)
        job = job_store.create_job(session, image=document, max_attempts=1)
        sent = received_bytes(session) - before
    # Before: 2 x 8.5 MB as a hex literal, over the packet; now the bytes and their escapes.
    assert len(document) < sent < len(document) * (1 + 1 / BYTES_PER_ESCAPE)
    with sessions() as session:
        stored = session.execute(
            text("SELECT data FROM job_images WHERE job_id = :id"), {"id": job.id}
        ).scalar_one()
    assert stored == document


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


def test_an_upload_that_escapes_past_the_packet_is_a_413_and_nothing_is_stored(
    stack: Stack, migrated: Engine
) -> None:
    document = backslash_bmp()
    assert len(document) < 10 * MIB
    before = set(rows(migrated))
    answer = requests.post(stack.url("/v1/jobs"), data=document, headers=BMP_TYPE, timeout=60)
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "too_large_for_database"
    assert "max_allowed_packet" in answer.json()["detail"] and "Retry-After" not in answer.headers
    compat = requests.post(stack.url("/image"), json={"image_data": b64(document)}, timeout=60)
    assert compat.status_code == 413 and compat.json()["error"]["code"] == "too_large_for_database"
    assert set(rows(migrated)) == before
    # The connection it went on is as good as the others.
    small = requests.post(
        stack.url("/v1/jobs"), data=backslash_bmp(40), headers=BMP_TYPE, timeout=30
    )
    assert small.status_code == 202, small.text


def test_the_start_up_check_counts_what_is_sent(migrated: Engine) -> None:
    largest = largest_upload_bytes(PACKET)
    # The bytes, one escape in 64 and the SQL around them: a 16 MiB packet takes 16.45 MB.
    assert 16_450_000 < largest < 16_460_000
    assert check_packet_size(migrated, load_settings(max_upload_bytes=largest)) == PACKET
    with pytest.raises(SettingsError, match=f"at most {largest}"):
        check_packet_size(migrated, load_settings(max_upload_bytes=largest + 1))
    # The default limit fits the default packet.
    assert check_packet_size(migrated, load_settings()) == PACKET


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
