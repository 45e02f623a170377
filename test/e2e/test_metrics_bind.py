"""/metrics on an address of its own (OCR_METRICS_BIND): served there without a key, and only
there; the API's own address answers 404 for it."""

from __future__ import annotations

import pytest
import requests

from ocr_common.settings import hash_api_key
from ocr_testkit.stack import Stack, free_port

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

KEY = "api-key-metrics-2c9e"
METRICS_PORT = free_port()
STACK_SETTINGS = {
    "OCR_METRICS_BIND": f"127.0.0.1:{METRICS_PORT}",
    "OCR_API_KEYS": f"tester={hash_api_key(KEY)}",
}
SCRAPE = f"http://127.0.0.1:{METRICS_PORT}"


def test_metrics_are_served_on_their_own_address_without_a_key(stack: Stack) -> None:
    key = {"X-API-Key": KEY}
    assert requests.get(stack.url("/image?task_id=x"), headers=key, timeout=10).status_code == 404
    scraped = requests.get(f"{SCRAPE}/metrics", timeout=10)
    assert scraped.status_code == 200
    # Every API process's counts (gunicorn serves both addresses from the same workers).
    assert 'ocr_api_requests_total{method="GET",route="/image",status="404"}' in scraped.text
    assert "ocr_jobs" in scraped.text


def test_the_apis_own_address_does_not_serve_metrics(stack: Stack) -> None:
    for headers in ({}, {"X-API-Key": KEY}):
        answer = requests.get(stack.url("/metrics"), headers=headers, timeout=10)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/", "/healthz", "/allimages", "/v1/jobs", "/docs"])
def test_the_metrics_address_serves_nothing_else(stack: Stack, path: str) -> None:
    answer = requests.get(f"{SCRAPE}{path}", headers={"X-API-Key": KEY}, timeout=10)
    assert answer.status_code == 404, path
