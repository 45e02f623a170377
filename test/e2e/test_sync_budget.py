"""A synchronous read has a budget (pages, then time), and no one's abandoned read holds the
engines: when its caller hangs up or its time runs out, its pages are stopped and their engines
restarted, so the next /image-sync and the queued jobs are read at once.

Before: a slow PDF sent to /v1/ocr by a client that hung up after 5 s kept both engines for
five minutes; every /image-sync meanwhile got 503 ocr_busy and queued jobs got no engine.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from sqlalchemy.engine import Engine

from ocr_testkit.hostile_pdfs import slow_pages_pdf
from ocr_testkit.pages import b64, render_document, text_wall
from ocr_testkit.scenarios import marker, rows, tiny_page, wait_final
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

SYNC_TIMEOUT_S = 20.0
STACK_SETTINGS = {
    "OCR_SYNC_MAX_PAGES": "4",
    "OCR_SYNC_TIMEOUT_S": str(SYNC_TIMEOUT_S),
    "OCR_PAGE_TIMEOUT_S": "15",
    "OCR_RENDER_TIMEOUT_S": "120",
}
PDF_TYPE = {"Content-Type": "application/pdf"}
# Each of its pages takes pdfium 35 s or more (8.7 s for 2000 fills measured on a quiet
# machine here): its two waves on two engines are far longer than the sync time, and than it
# takes an engine to restart and read a page on a loaded machine. With 2000 fills the four
# pages were once read whole in 19.8 s, within the 20 s sync time.
SLOW = slow_pages_pdf(pages=4, fills=8000)
# About 25 s of Tesseract on one core (dense lines of small text), past OCR_PAGE_TIMEOUT_S.
SLOW_IMAGE = text_wall(4000, 3000)
# How soon after a read is stopped an engine reads again: a restart (Tesseract's model loaded
# anew) and a small page, on a loaded machine.
FREED_WITHIN_S = 30.0


def abandoned(stack: Stack) -> int:
    """Engines the OCR server restarted because no one waited for their page any more."""
    metrics = requests.get(f"{stack.server_url}/metrics", timeout=10).text
    found = re.search(r'^ocr_engine_restarts_total\{cause="abandoned"\} (\S+)$', metrics, re.M)
    return int(float(found.group(1))) if found else 0


def read_now_and_later(stack: Stack, db: Engine, n: int) -> float:
    """Read a small page with /image-sync and queue one with /image; how long both took
    (the queued one read, its text right)."""
    started = time.monotonic()
    word = marker("Sync", n)
    sync = requests.post(
        stack.url("/image-sync"), json={"image_data": b64(tiny_page(word))}, timeout=60
    )
    assert sync.status_code == 200, sync.text
    assert "quick brown fox" in sync.json()["text"]
    queued = requests.post(
        stack.url("/image"), json={"image_data": b64(tiny_page(marker("Queued", n)))}, timeout=30
    )
    assert queued.status_code == 200, queued.text
    job_id = queued.json()["task_id"]
    assert wait_final(db, [job_id], FREED_WITHIN_S)
    assert "quick brown fox" in (rows(db, [job_id])[job_id].text or "")
    return time.monotonic() - started


def test_more_pages_than_a_sync_read_takes_is_a_413_at_once_that_points_to_jobs(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    five = render_document([["One"], ["Two"], ["Three"], ["Four"], ["Five"]], "PDF")
    before = set(rows(db_engine_e2e))
    started = time.monotonic()
    answer = requests.post(stack.url("/v1/ocr"), data=five, headers=PDF_TYPE, timeout=30)
    assert time.monotonic() - started < 5
    assert answer.status_code == 413, answer.text
    body = answer.json()
    assert body["code"] == "too_many_pages_to_wait_for" and body["field"] == "pages"
    assert "POST /v1/jobs" in body["detail"] and "OCR_SYNC_MAX_PAGES" in body["detail"]
    assert set(rows(db_engine_e2e)) == before
    # The same document, queued, or four of its pages now, are taken.
    queued = requests.post(stack.url("/v1/jobs"), data=five, headers=PDF_TYPE, timeout=30)
    assert queued.status_code == 202, queued.text
    four = requests.post(stack.url("/v1/ocr?pages=1-4"), data=five, headers=PDF_TYPE, timeout=60)
    assert four.status_code == 200, four.text
    assert wait_final(db_engine_e2e, [queued.json()["id"]], 60)


def test_a_read_whose_caller_hangs_up_frees_the_engines_at_once(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    restarted = abandoned(stack)
    before = set(rows(db_engine_e2e))
    with pytest.raises(requests.Timeout):
        # The client gives up after 3 s and closes its connection.
        requests.post(stack.url("/v1/ocr"), data=SLOW, headers=PDF_TYPE, timeout=3)
    # Both engines were reading a page for no one: each is stopped and restarted.
    took_s = read_now_and_later(stack, db_engine_e2e, 1)
    assert took_s < FREED_WITHIN_S
    assert abandoned(stack) >= restarted + 2
    # Nothing is recorded of a read no one received: the new jobs are the two small pages.
    new = rows(db_engine_e2e, set(rows(db_engine_e2e)) - before)
    assert sorted(row.format for row in new.values()) == ["PNG", "PNG"]


def test_a_read_that_runs_out_of_time_is_stopped_and_says_to_queue_it(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    restarted = abandoned(stack)
    started = time.monotonic()
    answer = requests.post(stack.url("/v1/ocr"), data=SLOW, headers=PDF_TYPE, timeout=120)
    waited = time.monotonic() - started
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "sync_timeout"
    assert "OCR_SYNC_TIMEOUT_S" in body["detail"] and "POST /v1/jobs" in body["detail"]
    # Its time, not its pages' (a minute and more); the engines stopped with it.
    assert SYNC_TIMEOUT_S <= waited < SYNC_TIMEOUT_S + 10
    assert read_now_and_later(stack, db_engine_e2e, 2) < FREED_WITHIN_S
    # The engines still reading when its time ran out were stopped: both, unless one had just
    # ended a page (how long pdfium takes on a page varies with the machine's load).
    assert abandoned(stack) >= restarted + 1


def test_an_image_sync_whose_caller_hangs_up_frees_its_engine(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    stopped = abandoned(stack)
    with pytest.raises(requests.Timeout):
        requests.post(stack.url("/image-sync"), json={"image_data": b64(SLOW_IMAGE)}, timeout=3)
    # Before, Tesseract read on for no one until OCR_PAGE_TIMEOUT_S (15 s here).
    assert read_now_and_later(stack, db_engine_e2e, 3) < FREED_WITHIN_S
    assert abandoned(stack) == stopped + 1
