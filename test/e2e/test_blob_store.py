"""Both services on a real S3 server (SeaweedFS): documents go there and nowhere else, are
deleted when their jobs no longer need them, and what no job holds is swept; a job whose
document is gone fails at once with a code that says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from ocr_common.blobs import JobFiles
from ocr_common.models import JobImageRow
from ocr_testkit.pages import b64, encode, render_page_image
from ocr_testkit.s3_server import SeaweedS3
from ocr_testkit.stack import Stack, running_stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

# The sweep deletes what no job holds once it is a second old (an hour by default).
GRACE_S = 1


@pytest.fixture(scope="module")
def stack(
    mysql_url: str,
    db_engine_e2e: Engine,
    s3_server: SeaweedS3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Both services on a bucket of the S3 server, under a prefix (the AWS_* variables that
    point at it are in the environment the services start with), letting go of documents once
    read (kept, they are deleted with their jobs: test_searchable_pdf_wire)."""
    bucket = s3_server.create_bucket()
    settings = {
        "OCR_BLOB_URL": f"s3://{bucket}/ocr",
        "OCR_BLOB_GRACE_S": str(GRACE_S),
        "OCR_KEEP_IMAGES": "false",
    }
    with running_stack(mysql_url, tmp_path_factory.mktemp("e2e-s3"), **settings) as stack:
        yield stack


def stored_keys(stack: Stack) -> list[str]:
    return [blob.key for blob in stack.files.store.list("jobs/", limit=1000)]


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    answer = requests.get(stack.url(f"/v1/jobs/{job_id}"), timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ended(stack: Stack, job_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        body = job(stack, job_id)
        return body if body["status"] in ("succeeded", "failed", "canceled") else None

    found: dict[str, Any] = wait_until(final, 90, f"job {job_id} to end", interval_s=0.2)
    return found


def test_a_document_goes_to_s3_is_read_from_there_and_deleted_after(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    page = encode(render_page_image(["Stored in a bucket"]))
    task_id = stack.submit(b64(page))
    # Committed: its document is in the bucket, under the job's own id, and not in MySQL.
    assert stored_keys(stack) in ([JobFiles.document_key(task_id)], [])
    assert "Stored in a bucket" in stack.result(task_id)
    wait_until(lambda: stored_keys(stack) == [], 30, "the document to be deleted")
    with db_engine_e2e.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(JobImageRow)) == 0
        key = conn.scalar(text("SELECT document_key FROM jobs WHERE id = :id"), {"id": task_id})
    assert key is None


def test_a_canceled_job_takes_its_document_with_it(stack: Stack) -> None:
    # The OCR server is stopped: the job stays queued until it is canceled.
    stack.ocr.stop()
    try:
        page = encode(render_page_image(["Never read"]))
        answer = requests.post(
            stack.url("/v1/jobs"), data=page, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        assert stored_keys(stack) == [JobFiles.document_key(job_id)]
        canceled = requests.delete(stack.url(f"/v1/jobs/{job_id}"), timeout=30)
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert stored_keys(stack) == []
    finally:
        stack.start_ocr()


def test_a_job_whose_document_is_gone_fails_at_once_with_a_code_that_says_so(
    stack: Stack,
) -> None:
    stack.ocr.stop()
    try:
        task_id = stack.submit(b64(encode(render_page_image(["Lost"]))))
        stack.files.release_documents([task_id])
    finally:
        stack.start_ocr()
    body = ended(stack, task_id)
    assert body["status"] == "failed" and body["attempts"] == 1
    assert body["error"]["code"] == "document_missing"
    assert "submit it again" in body["error"]["message"]
    compat = requests.get(stack.url("/image"), json={"task_id": task_id}, timeout=30)
    assert compat.status_code == 422 and compat.json()["error"]["code"] == "document_missing"


def test_the_maintenance_loop_sweeps_what_no_job_holds(stack: Stack) -> None:
    # An intake that stored its document and died before committing its job, and the kept
    # files of a job deleted while the store did not answer.
    never = stack.files.store_document(b"an intake that never committed")
    stack.files.store.put("jobs/0b7e54d8-4f59-4f4e-9d0a-3c4b0f6b5a11/pages/1.png", b"png")
    assert len(stored_keys(stack)) == 2
    # The maintenance loop comes round every half lease (15 s): two rounds and slack for a
    # loaded machine.
    wait_until(lambda: stored_keys(stack) == [], 60, "the sweep to delete them")
    assert never.job_id not in requests.get(stack.url("/allimages"), timeout=30).json()
