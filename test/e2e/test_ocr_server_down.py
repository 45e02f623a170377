"""The API keeps accepting jobs while the OCR server is down; they run once it is back."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
import requests
from sqlalchemy.engine import Engine

from ocr_testkit.pages import HELLO_PNG, assert_reads, b64
from ocr_testkit.scenarios import medium_page, rows
from ocr_testkit.stack import Stack, group_members
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

HELLO_B64 = b64(HELLO_PNG)


def statuses(engine: Engine, ids: list[str]) -> dict[str, tuple[str, int]]:
    return {job_id: (row.status, row.attempts) for job_id, row in rows(engine, ids).items()}


def stop_ocr_server(stack: Stack) -> None:
    """SIGTERM to the OCR server alone (as docker or systemd send it); it must exit cleanly."""
    pgid = stack.ocr.pid
    code = stack.ocr.stop(signal.SIGTERM)
    assert code == 0, stack.ocr.log_text()
    # Its engine processes go with it.
    wait_until(lambda: not group_members(pgid), 10, "the engine processes to exit")


def test_jobs_wait_in_the_queue_while_the_ocr_server_is_down(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    stop_ocr_server(stack)
    try:
        response = requests.post(stack.url("/image"), json={"image_data": HELLO_B64}, timeout=30)
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        uuid.UUID(task_id)
        listed = requests.post(
            stack.url("/image"), json={"image_data": [HELLO_B64, HELLO_B64]}, timeout=30
        )
        assert listed.status_code == 200, listed.text
        ids = [task_id, *listed.json()["task_id"]]

        pending = requests.get(stack.url("/image"), json={"task_id": task_id}, timeout=30)
        assert pending.status_code == 200
        assert pending.json() == {"task_id": None}
        listing = requests.get(stack.url("/allimages"), timeout=30).json()
        assert all(listing[i] is None for i in ids)
        assert {s for s, _ in statuses(db_engine_e2e, ids).values()} == {"queued"}

        for body in ({"image_data": HELLO_B64}, {"image_data": [HELLO_B64, HELLO_B64]}):
            started = time.monotonic()
            sync = requests.post(stack.url("/image-sync"), json=body, timeout=30)
            elapsed = time.monotonic() - started
            assert sync.status_code == 503, sync.text
            assert elapsed < 5, f"/image-sync took {elapsed:.1f} s to say the OCR server is down"
            assert int(sync.headers["Retry-After"]) > 0
            assert sync.json()["error"]["code"]
            assert sync.json()["error"]["message"]
        # Nothing was recorded for the sync requests that could not run.
        after = requests.get(stack.url("/allimages"), timeout=30).json()
        assert after == listing
    finally:
        stack.start_ocr()

    for job_id in ids:
        assert_reads(stack.result(job_id))
    assert statuses(db_engine_e2e, ids) == {i: ("succeeded", 1) for i in ids}
    sync = requests.post(stack.url("/image-sync"), json={"image_data": HELLO_B64}, timeout=60)
    assert sync.status_code == 200, sync.text
    assert_reads(sync.json()["text"])


def test_sigterm_finishes_running_jobs_and_leaves_the_rest_queued(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    pages = [b64(medium_page(f"Job {n} quick brown fox")) for n in range(12)]
    response = requests.post(stack.url("/image"), json={"image_data": pages}, timeout=60)
    assert response.status_code == 200, response.text
    ids = response.json()["task_id"]

    wait_until(
        lambda: any(s == "running" for s, _ in statuses(db_engine_e2e, ids).values()),
        30,
        "a job to be running",
        interval_s=0.02,
    )
    try:
        stop_ocr_server(stack)
        after_stop = statuses(db_engine_e2e, ids)
        # Running work was finished (or given back), never left running for the reaper.
        assert {s for s, _ in after_stop.values()} <= {"succeeded", "queued"}, after_stop
        assert "queued" in {s for s, _ in after_stop.values()}, "the stop did not interrupt"
    finally:
        stack.start_ocr()

    for n, job_id in enumerate(ids):
        text = stack.result(job_id)
        assert f"Job {n}" in text, text
    # A graceful stop costs no attempt.
    assert statuses(db_engine_e2e, ids) == {i: ("succeeded", 1) for i in ids}
