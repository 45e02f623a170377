"""Floods are bounded: batch length, a rate limit that counts images, a per-key cap on queued
jobs, and wrong API keys limited per client address. Real services, real requests."""

from __future__ import annotations

import base64

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ocr_common.models import JobRow
from ocr_common.settings import hash_api_key
from ocr_testkit.pages import HELLO_PNG, b64
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

KEYS = {name: f"{name}-key-0123456789" for name in ("rate", "queue", "other", "batch")}
MAX_BATCH = 8
RATE = 20  # images a minute per key
QUEUE_CAP = 12
AUTH_FAILURES = 5
HELLO_B64 = b64(HELLO_PNG)
STACK_SETTINGS = {
    "OCR_API_KEYS": ",".join(f"{name}={hash_api_key(key)}" for name, key in KEYS.items()),
    "OCR_MAX_BATCH": str(MAX_BATCH),
    "OCR_RATE_LIMIT": f"{RATE}/minute",
    "OCR_MAX_QUEUED_PER_KEY": str(QUEUE_CAP),
    "OCR_AUTH_FAILURE_LIMIT": f"{AUTH_FAILURES}/minute",
    # One process: memory:// counters are per process.
    "OCR_API_PROCESSES": "1",
}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def post(stack: Stack, path: str, images: int, key: str) -> requests.Response:
    body = {"image_data": [HELLO_B64] * images}
    return requests.post(stack.url(path), json=body, headers=auth(key), timeout=120)


def jobs_of(engine: Engine, owner: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(JobRow.owner == owner)).scalar_one())


def test_a_batch_over_the_limit_is_413_and_stores_nothing(
    stack: Stack, db_engine_e2e: Engine
) -> None:
    for path in ("/image", "/image-sync"):
        response = post(stack, path, MAX_BATCH + 1, "batch")
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "batch_too_large"
        assert str(MAX_BATCH) in error["message"] and "OCR_MAX_BATCH" in error["message"]
    assert jobs_of(db_engine_e2e, "batch") == 0


def test_the_rate_limit_counts_images_not_requests(stack: Stack) -> None:
    # Three requests of 8, 8 and 4 images use the 20 a minute: a fourth, of one image, is over.
    for images in (MAX_BATCH, MAX_BATCH, 4):
        assert post(stack, "/image-sync", images, "rate").status_code == 200
    over = post(stack, "/image-sync", 1, "rate")
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "rate_limited" and int(over.headers["Retry-After"]) > 0
    # Per key: another key still has its own 20.
    assert post(stack, "/image-sync", MAX_BATCH, "other").status_code == 200


def test_queued_jobs_are_capped_per_key(stack: Stack, db_engine_e2e: Engine) -> None:
    # With the OCR server stopped nothing leaves the queue.
    stack.ocr.stop()
    assert post(stack, "/image", MAX_BATCH, "queue").status_code == 200
    assert post(stack, "/image", 4, "queue").status_code == 200  # 12: the cap
    over = post(stack, "/image", 1, "queue")
    assert over.status_code == 429, over.text
    error = over.json()["error"]
    assert error["code"] == "queue_full" and "OCR_MAX_QUEUED_PER_KEY" in error["message"]
    assert int(over.headers["Retry-After"]) > 0
    v1 = requests.post(
        stack.url("/v1/jobs"),
        json={"document": base64.b64encode(HELLO_PNG).decode()},
        headers=auth("queue"),
        timeout=30,
    )
    assert v1.status_code == 429 and v1.json()["code"] == "queue_full", v1.text
    assert jobs_of(db_engine_e2e, "queue") == QUEUE_CAP
    # Another key's queue is its own.
    assert post(stack, "/image", 1, "batch").status_code == 200


def test_wrong_keys_through_a_proxy_count_for_the_client_it_names(stack: Stack) -> None:
    # This host is a trusted proxy (gunicorn's forwarded_allow_ips, 127.0.0.1 by default): the
    # client is the last X-Forwarded-For entry, not the connecting address.
    body = {"image_data": HELLO_B64}

    def wrong_key(client: str, n: int) -> requests.Response:
        headers = {"X-Forwarded-For": f"198.51.100.1, {client}", "X-API-Key": f"guess-{n}"}
        return requests.post(stack.url("/image"), json=body, headers=headers, timeout=30)

    for n in range(AUTH_FAILURES):
        assert wrong_key("203.0.113.7", n).status_code == 401
    refused = wrong_key("203.0.113.7", AUTH_FAILURES)
    assert refused.status_code == 429, refused.text
    assert "from 203.0.113.7 " in refused.json()["error"]["message"]
    # Another client of the proxy, and the proxy's own address, are not locked out.
    assert wrong_key("203.0.113.8", 0).status_code == 401
    assert requests.get(stack.url("/allimages"), headers=auth("other"), timeout=30).ok


def test_wrong_keys_are_limited_per_client_address(stack: Stack) -> None:
    # Last in the module: it locks this address out for the rest of the minute.
    body = {"image_data": HELLO_B64}
    for n in range(AUTH_FAILURES):
        wrong = {"Authorization": f"Bearer guess-{n}"}
        response = requests.post(stack.url("/image"), json=body, headers=wrong, timeout=30)
        assert response.status_code == 401, response.text
    response = requests.post(
        stack.url("/image"), json=body, headers={"X-API-Key": "guess-x"}, timeout=30
    )
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_auth_failures"
    assert int(response.headers["Retry-After"]) > 0
    # The address is refused before its key is looked at: the right key learns nothing either.
    right = requests.get(stack.url("/allimages"), headers=auth("other"), timeout=30)
    assert right.status_code == 429
    # Requests without a key are told they need one, as before.
    assert requests.get(stack.url("/allimages"), timeout=30).status_code == 401
