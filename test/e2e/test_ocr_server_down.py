"""The API keeps accepting jobs while the OCR server is down; they run once it is back."""

from __future__ import annotations

import re
import signal
import time
import uuid
from typing import Any

import pytest
import requests
from sqlalchemy.engine import Engine

from api_server.schemas import Job
from ocr_testkit.pages import HELLO_PNG, assert_reads, b64
from ocr_testkit.scenarios import medium_page, rows
from ocr_testkit.stack import Stack, group_members
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

HELLO_B64 = b64(HELLO_PNG)
PNG = {"Content-Type": "image/png"}
# An OCR server killed (not stopped) is waited for this long before /readyz gives up on it.
STALE_S = 3
STACK_SETTINGS = {"OCR_STALE_WORKERS_S": str(STALE_S)}


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


def readyz(stack: Stack) -> tuple[int, dict[str, Any]]:
    response = requests.get(stack.url("/readyz"), timeout=30)
    return response.status_code, response.json()


def v1_job(stack: Stack, job_id: str) -> dict[str, Any]:
    response = requests.get(stack.url(f"/v1/jobs/{job_id}"), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_stalled_queue_says_why_and_recovers(stack: Stack) -> None:
    ready = wait_until(lambda: readyz(stack)[0] == 200 and readyz(stack), 10, "/readyz ready")
    assert ready[1] == {"status": "ready", "ocr_servers_alive": 1}

    # Stopped on purpose: not waited for at all.
    stop_ocr_server(stack)
    try:
        status, body = readyz(stack)
        assert status == 503, body
        assert body["error"]["code"] == "no_ocr_server"
        message = body["error"]["message"]
        assert re.fullmatch(
            r"no OCR server has been seen for \d+ s \(the last one stopped\); jobs will wait",
            message,
        ), message
        # The API itself is ready (what Kubernetes probes): it takes jobs, which wait.
        own = requests.get(stack.url("/readyz?exclude=ocr_servers"), timeout=30)
        assert own.status_code == 200 and own.json() == {"status": "ready"}
        ids = []
        for _ in range(3):
            answer = requests.post(stack.url("/v1/jobs"), data=HELLO_PNG, headers=PNG, timeout=30)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        last = v1_job(stack, ids[2])
        assert last["status"] == "queued"
        # The same reason; its count of seconds may have ticked on since.
        queue = dict(last["queue"])
        stalled = queue.pop("stalled")
        assert queue == {"jobs_ahead": 2, "ocr_servers_alive": 0}
        assert re.sub(r"\d+ s", "N s", stalled) == re.sub(r"\d+ s", "N s", message), stalled
        Job.model_validate(last)
    finally:
        stack.start_ocr()

    assert wait_until(lambda: readyz(stack)[0] == 200, 10, "/readyz ready again")
    for job_id in ids:
        done = wait_until(
            lambda job_id=job_id: (job := v1_job(stack, job_id))["status"] == "succeeded" and job,
            60,
            f"job {job_id} to be read",
        )
        assert done["queue"] is None and "Hello" in done["text"]

    # Killed: nothing marks it stopped; it is waited for OCR_STALE_WORKERS_S, then not.
    killed_at = time.monotonic()
    stack.ocr.stop(signal.SIGKILL, group=True)
    try:
        wait_until(
            lambda: readyz(stack)[0] == 503, STALE_S + 10, "/readyz to see the OCR server gone"
        )
        waited_s = time.monotonic() - killed_at
        message = readyz(stack)[1]["error"]["message"]
        assert re.fullmatch(r"no OCR server has been seen for \d+ s; jobs will wait", message)
        assert STALE_S - 1 <= waited_s <= STALE_S + 10, waited_s
        answer = requests.post(stack.url("/v1/jobs"), data=HELLO_PNG, headers=PNG, timeout=30)
        queued = v1_job(stack, answer.json()["id"])
        assert queued["queue"]["ocr_servers_alive"] == 0 and queued["queue"]["jobs_ahead"] == 0
    finally:
        stack.start_ocr()
    assert wait_until(lambda: readyz(stack)[0] == 200, 10, "/readyz ready again")
    assert wait_until(
        lambda: v1_job(stack, queued["id"])["status"] == "succeeded", 60, "the job to be read"
    )
