"""The operations view, end to end: both services' /metrics move with real work, and a request
id follows a job from the API to the OCR server (JSON log lines) and back (the answer)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ocr_testkit.pages import b64, render_lines
from ocr_testkit.stack import Stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

SAMPLE_TEXT = "Metrics move when pages are read"
STACK_SETTINGS = {"OCR_LOG_FORMAT": "json"}


def image_b64(tag: str) -> str:
    """A page of its own: the same bytes twice would be answered from the stored result."""
    return b64(render_lines([SAMPLE_TEXT, f"Sample {tag}"]))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, by name and labels."""
    response = requests.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(
    before: dict[Any, float], after: dict[Any, float], name: str, by: float = 1, **labels: str
) -> bool:
    """Whether the sample ``name`` with ``labels`` grew by ``by`` at least."""
    return value(after, name, **labels) >= value(before, name, **labels) + by


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_metrics_of_both_services_move_with_work(stack: Stack) -> None:
    api_before, ocr_before = scrape(stack.api_url), scrape(stack.server_url)

    sync = requests.post(stack.url("/image-sync"), json={"image_data": image_b64("A")}, timeout=60)
    assert sync.status_code == 200, sync.text
    task_id = stack.submit(image_b64("B"))
    assert "Metrics" in stack.result(task_id)
    missing = requests.get(stack.url("/v1/jobs/does-not-exist"), timeout=30)
    assert missing.status_code == 404

    api, ocr = scrape(stack.api_url), scrape(stack.server_url)
    # Requests by route and status, summed over both gunicorn processes.
    ok_sync = {"method": "POST", "route": "/image-sync", "status": "200"}
    assert grew(api_before, api, "ocr_api_requests_total", **ok_sync)
    route_404 = {"method": "GET", "route": "/v1/jobs/<job_id>", "status": "404"}
    assert value(api, "ocr_api_requests_total", **route_404) >= 1
    sync_route = {"method": "POST", "route": "/image-sync"}
    assert grew(api_before, api, "ocr_api_request_duration_seconds_count", **sync_route)
    assert value(api, "ocr_api_request_duration_seconds_sum", **sync_route) > 0
    # The queue, read from the database by either service.
    for samples in (api, ocr):
        assert value(samples, "ocr_database_up") == 1
        assert value(samples, "ocr_jobs", status="succeeded") >= 1

    # The OCR server: its internal route, pages, jobs, engines.
    ocr_route = {"method": "POST", "route": "/ocr", "status": "200"}
    assert grew(ocr_before, ocr, "ocr_server_requests_total", **ocr_route)
    assert grew(ocr_before, ocr, "ocr_pages_total", by=2, outcome="ok")
    assert grew(ocr_before, ocr, "ocr_job_duration_seconds_count")
    assert value(ocr, "ocr_engines") == 2
    assert 0 <= value(ocr, "ocr_engines_busy") <= 2
    assert value(ocr, "ocr_dispatcher_succeeded_total") >= 1


def test_engines_killed_while_idle_are_replaced_before_a_sync_read(stack: Stack) -> None:
    before = scrape(stack.server_url)
    status = requests.get(f"{stack.server_url}/status", timeout=30).json()
    for engine in status["engines"]:
        exited = os.pidfd_open(engine["pid"])  # readable once the process has exited
        os.kill(engine["pid"], signal.SIGKILL)
        assert select.select([exited], [], [], 10)[0], f"engine {engine} alive after SIGKILL"
        os.close(exited)
    # A synchronous read is not tried again: it must find a live engine, a fresh one.
    sync = requests.post(stack.url("/image-sync"), json={"image_data": image_b64("C")}, timeout=60)
    assert sync.status_code == 200, sync.text
    assert "Metrics" in sync.json()["text"]
    after = scrape(stack.server_url)
    assert grew(before, after, "ocr_engine_restarts_total", cause="crash")
    # No page went down with an idle engine.
    crashed = {"outcome": "engine_crashed"}
    assert value(after, "ocr_pages_total", **crashed) == value(before, "ocr_pages_total", **crashed)


def test_a_request_id_follows_a_job_to_the_ocr_server_and_back(stack: Stack) -> None:
    request_id = "client-trace-7f3a"
    response = requests.post(
        stack.url("/image"),
        json={"image_data": image_b64("D")},
        headers={"X-Request-Id": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-Id"] == request_id
    task_id = response.json()["task_id"]
    stack.result(task_id)

    def job_lines() -> list[dict[str, Any]]:
        return [
            line for line in json_lines(stack.ocr.log_text()) if task_id in line.get("message", "")
        ]

    lines = wait_until(
        lambda: [line for line in job_lines() if "ended" in line["message"]],
        10,
        "the OCR server's log line for the job",
    )
    assert {line["request_id"] for line in job_lines()} == {request_id}
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    # The API's own access line carries it too.
    api_access = [
        line
        for line in json_lines(stack.api.log_text())
        if line.get("request_id") == request_id and line.get("path") == "/image"
    ]
    assert api_access and api_access[0]["status"] == 200


def test_a_sync_request_id_reaches_the_ocr_server(stack: Stack) -> None:
    request_id = "sync-trace-42"
    response = requests.post(
        stack.url("/image-sync"),
        json={"image_data": image_b64("E")},
        headers={"X-Request-Id": request_id},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-Id"] == request_id
    ocr_access = wait_until(
        lambda: [
            line
            for line in json_lines(stack.ocr.log_text())
            if line.get("request_id") == request_id and line.get("path") == "/ocr"
        ],
        10,
        "the OCR server's access line of the sync read",
    )
    assert ocr_access[0]["status"] == 200


@pytest.mark.parametrize("given", ["", "has spaces in it", "x" * 65, "semi;colon"])
def test_an_unusable_request_id_is_replaced(stack: Stack, given: str) -> None:
    response = requests.get(stack.url("/healthz"), headers={"X-Request-Id": given}, timeout=30)
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


def test_every_json_log_line_of_both_services_has_an_iso_8601_utc_time(stack: Stack) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    stack.result(stack.submit(image_b64("F")))
    for service in (stack.api, stack.ocr):
        lines = json_lines(service.log_text())
        assert len(lines) >= 3, service.log_text()
        for line in lines:
            # 2026-12-04T19:27:18.123Z: the zone said, milliseconds, what collectors parse.
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
        newest = datetime.fromisoformat(lines[-1]["time"])
        assert started <= newest <= datetime.now(UTC) + timedelta(seconds=1), (newest, started)


def test_readiness_probes_leave_the_log_alone(stack: Stack) -> None:
    # A probe every few seconds: the schema check it runs must not write a line each time.
    for _ in range(3):
        assert requests.get(stack.url("/readyz"), timeout=30).status_code == 200
    assert "Context impl" not in stack.api.log_text()
    assert "non-transactional DDL" not in stack.api.log_text()
