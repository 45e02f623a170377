"""No accepted job is lost when the OCR server is killed (SIGKILL) in the middle of its work."""

from __future__ import annotations

import os
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy.engine import Engine

from ocr_common.blobs import JobFiles
from ocr_testkit.pages import b64
from ocr_testkit.scenarios import medium_page, rows, status_counts
from ocr_testkit.stack import Stack, group_members
from ocr_testkit.waits import poll_until, wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

JOBS = 40


def test_sigkill_of_the_ocr_server_loses_no_job(stack: Stack, db_engine_e2e: Engine) -> None:
    # Pages large enough (about 0.3 s of Tesseract each) that the kill lands while jobs run.
    pages = [b64(medium_page(f"Job {n} quick brown fox")) for n in range(JOBS)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(stack.submit, pages))
    assert len(set(ids)) == JOBS

    def some_running_some_done() -> bool:
        now = status_counts(db_engine_e2e)
        return now["running"] >= 1 and now["succeeded"] >= 4

    wait_until(some_running_some_done, 60, "jobs to be running", interval_s=0.02)
    pgid = stack.ocr.pid
    # The realistic crash: the OCR server process alone, with no chance to clean up.
    os.kill(pgid, signal.SIGKILL)
    assert stack.ocr.proc is not None
    assert stack.ocr.proc.wait(10) == -signal.SIGKILL
    crashed = {i: row for i, row in rows(db_engine_e2e).items() if row.status == "running"}
    assert crashed, "no job was running when the OCR server was killed"
    old_worker = {row.worker_id for row in crashed.values()}
    assert len(old_worker) == 1
    done_before = {i for i, row in rows(db_engine_e2e).items() if row.status == "succeeded"}
    assert len(done_before) < JOBS

    # Orphaned engine processes notice that their parent is gone and exit.
    engines_exited = poll_until(lambda: not group_members(pgid), 15)
    stack.ocr.kill_group()
    assert engines_exited, "engine processes outlived the killed OCR server by 15 s"

    stack.start_ocr()
    wait_until(
        lambda: sum(status_counts(db_engine_e2e)[s] for s in ("succeeded", "failed")) == JOBS,
        120,
        f"all {JOBS} jobs to finish after the restart",
        interval_s=0.2,
    )

    final = rows(db_engine_e2e)
    assert set(final) == set(ids)
    failed = {
        i: (row.error_code, row.error_message) for i, row in final.items() if row.status == "failed"
    }
    assert all(code and message for code, message in failed.values()), failed
    # One crash costs one attempt of the (default) three: nothing should fail here.
    assert status_counts(db_engine_e2e) == Counter({"succeeded": JOBS}), failed
    for n, job_id in enumerate(ids):
        row = final[job_id]
        assert 1 <= row.attempts <= row.max_attempts
        assert row.finished_at is not None and row.lease_until is None
        assert row.text and f"Job {n}" in row.text, row.text
        assert row.text.endswith("\n") and "\x0c" not in row.text
        if job_id in done_before:
            # Finished before the crash: left alone, written once.
            assert row.attempts == 1 and row.worker_id in old_worker
    for job_id in crashed:
        row = final[job_id]
        # Taken over after its lease ran out, run again by the new server, written by it alone.
        assert row.attempts == 2, (job_id, row.attempts)
        assert row.worker_id not in old_worker
    # Every document is kept with its job (OCR_KEEP_IMAGES), once: none lost, none orphaned.
    stored = sorted(blob.key for blob in stack.files.store.list("jobs/", limit=1000))
    assert stored == sorted(JobFiles.document_key(job_id) for job_id in ids)

    stats = requests.get(f"{stack.server_url}/status", timeout=10).json()["dispatcher"]
    assert stats["lost_leases"] == 0
    assert stats["requeued_by_reaper"] == len(crashed)

    # Every id still answers on the original API, with its text.
    listing = requests.get(stack.url("/allimages"), timeout=30).json()
    for n, job_id in enumerate(ids):
        answer = requests.get(stack.url("/image"), json={"task_id": job_id}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert f"Job {n}" in answer.json()["task_id"]
        assert listing[job_id] == answer.json()["task_id"]
