"""The API's gunicorn workers share one metrics directory: one that exits (killed, crashed, or
replaced on a stop) must leave it to the others, which keep answering, /metrics included."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import requests

from ocr_testkit.stack import Stack
from ocr_testkit.waits import wait_until

STACK_SETTINGS = {"OCR_API_PROCESSES": "2"}


def workers_of(pid: int) -> set[int]:
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


def test_a_worker_that_exits_leaves_the_others_answering(stack: Stack) -> None:
    # The stack is up once one worker answers; gunicorn may still be forking the second.
    wait_until(lambda: len(workers_of(stack.api.pid)) == 2, 30, "gunicorn's two workers")
    workers = workers_of(stack.api.pid)
    gone = min(workers)
    os.kill(gone, signal.SIGTERM)
    wait_until(
        lambda: gone not in (now := workers_of(stack.api.pid)) and len(now) == 2,
        30,
        "gunicorn to replace the worker",
    )
    # A new connection each: the kernel spreads them over both workers, the new one too.
    for n in range(30):
        assert requests.get(stack.url("/v1/jobs?limit=1"), timeout=30).status_code == 200
        assert requests.get(stack.url(f"/nothing-here-{n}"), timeout=30).status_code == 404
        metrics = requests.get(stack.url("/metrics"), timeout=30)
        assert metrics.status_code == 200 and "ocr_api_requests_total" in metrics.text
