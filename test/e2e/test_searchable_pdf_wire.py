"""format=pdf through both real services: a queued book-page PDF and a receipt read now come
back searchable, later too (the document is kept with its job), and the kept document goes with
its job."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import img2pdf
import pikepdf
import pytest
import requests

from ocr_common.blobs import JobFiles
from ocr_common.render.pdf import text_pages
from ocr_common.result import Page
from ocr_testkit.searchable import compare
from ocr_testkit.stack import JOB_TIMEOUT_S, Stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]
SHARED_DATA = Path(
    os.environ.get("OCR_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)


def shared(name: str) -> bytes:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is missing: set OCR_SHARED_DATA to the folder of real pages")
    return path.read_bytes()


def ended(stack: Stack, job_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        body: dict[str, Any] = requests.get(stack.url(f"/v1/jobs/{job_id}"), timeout=30).json()
        return body if body["status"] in ("succeeded", "failed", "canceled") else None

    found: dict[str, Any] = wait_until(final, JOB_TIMEOUT_S, f"job {job_id} to end", interval_s=0.2)
    return found


def assert_searchable(pdf: bytes, job: dict[str, Any]) -> None:
    pages = text_pages([Page.model_validate(page) for page in job["pages"]])
    assert pages
    for index, page in enumerate(pages):
        found = compare(pdf, index, page)
        assert found.words > 0 and found.found >= 0.99 * found.words, found


def test_a_queued_pdf_comes_back_searchable_and_its_document_goes_with_the_job(
    stack: Stack,
) -> None:
    data = bytes(img2pdf.convert(shared("books/a022.png"), shared("books/j060.png")))
    queued = requests.post(
        stack.url("/v1/jobs"), data=data, headers={"Content-Type": "application/pdf"}, timeout=30
    )
    assert queued.status_code == 202, queued.text
    job = ended(stack, queued.json()["id"])
    assert job["status"] == "succeeded", job
    answer = requests.get(stack.url(f"/v1/jobs/{job['id']}?format=pdf"), timeout=60)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/pdf"
    assert_searchable(answer.content, job)
    with pikepdf.open(io.BytesIO(answer.content)) as pdf:
        assert len(pdf.pages) == 2
    by_accept = requests.get(
        stack.url(f"/v1/jobs/{job['id']}"), headers={"Accept": "application/pdf"}, timeout=60
    )
    assert by_accept.content == answer.content
    # Kept with the job, deleted with it.
    key = JobFiles.document_key(job["id"])
    assert [blob.key for blob in stack.files.store.list(key, limit=10)] == [key]
    assert requests.delete(stack.url(f"/v1/jobs/{job['id']}"), timeout=30).status_code == 204
    assert stack.files.store.list(key, limit=10) == []


def test_a_receipt_read_now_is_a_pdf_at_once_and_later(stack: Stack) -> None:
    data = shared("receipts/000.jpg")
    now = requests.post(
        stack.url("/v1/ocr?format=pdf"),
        data=data,
        headers={"Content-Type": "image/jpeg"},
        timeout=120,
    )
    assert now.status_code == 200, now.text
    assert now.headers["Content-Type"] == "application/pdf"
    assert len(now.content) <= len(data) + 15_000
    [listed] = requests.get(stack.url("/v1/jobs?limit=1"), timeout=30).json()["jobs"]
    job = requests.get(stack.url(f"/v1/jobs/{listed['id']}"), timeout=30).json()
    assert_searchable(now.content, job)
    later = requests.get(stack.url(f"/v1/jobs/{job['id']}?format=pdf"), timeout=60)
    assert later.status_code == 200 and later.content == now.content
