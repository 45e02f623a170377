"""Webhooks end to end: real ocr-api and ocr-server processes on MySQL, real Tesseract, and a
real receiver; the OCR server killed mid-delivery, stopped while a job is canceled, and two
OCR servers sending at once."""

from __future__ import annotations

import base64
import signal
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook

from ocr_common.models import WebhookDeliveryRow
from ocr_testkit.pages import HELLO_PNG, assert_reads
from ocr_testkit.stack import JOB_TIMEOUT_S, Service, Stack, free_port
from ocr_testkit.waits import wait_until
from ocr_testkit.webhook_receiver import Answer, WebhookReceiver, receiving

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

SECRET = "whsec_" + base64.b64encode(b"an end-to-end secret of 32 bytes").decode()
STACK_SETTINGS = {
    "OCR_WEBHOOK_SECRET": SECRET,
    # The receivers these tests start listen on loopback.
    "OCR_WEBHOOK_ALLOW": "127.0.0.1",
    "OCR_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,1,1,2",
    "OCR_WEBHOOK_CONCURRENCY": "2",
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with receiving() as started:
        yield started


def submit(stack: Stack, webhook_url: str, document: bytes = HELLO_PNG) -> str:
    response = requests.post(
        stack.url("/v1/jobs"),
        files={"file": ("page.png", document)},
        data={"webhook_url": webhook_url},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    assert response.json()["webhook_url"] == webhook_url
    return str(response.json()["id"])


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    return dict(requests.get(stack.url(f"/v1/jobs/{job_id}"), timeout=30).json())


def delivered(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job's one delivery, once it is delivered."""

    def done() -> dict[str, Any] | None:
        found = job(stack, job_id)["webhook_deliveries"]
        return found[0] if found and found[0]["status"] == "delivered" else None

    return dict(wait_until(done, JOB_TIMEOUT_S, f"the delivery of job {job_id}", interval_s=0.2))


def event(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    return dict(Webhook(SECRET).verify(body, headers))


def corrupt_png() -> bytes:
    """A PNG whose structure is sound (chunk checksums right) but whose pixels cannot be
    decoded: the API takes it, the engine fails it."""
    data = bytearray(HELLO_PNG)
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    end = start + 4 + length
    for i in range(start + 14, end - 10):
        data[i] ^= 0x5A
    data[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(data[start:end])))
    return bytes(data)


def test_a_job_that_succeeds_or_fails_is_told_to_its_receiver(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    read, broken = submit(stack, receiver.url), submit(stack, receiver.url, corrupt_png())
    for job_id in (read, broken):
        delivery = delivered(stack, job_id)
        assert delivery["attempts"] == 1 and delivery["last_status"] == 200
    events = {}
    for request in receiver.wait_for(2):
        body = event(request.body, request.headers)
        events[body["data"]["id"]] = (body, request.headers)
    assert set(events) == {read, broken} and len(receiver.received) == 2
    succeeded, headers = events[read]
    assert succeeded["type"] == "job.succeeded" and succeeded["data"]["status"] == "succeeded"
    assert headers["webhook-id"] == job(stack, read)["webhook_deliveries"][0]["id"]
    text = requests.get(stack.url(succeeded["data"]["links"]["text"]), timeout=30).text
    assert_reads(text)
    failed, _ = events[broken]
    assert failed["type"] == "job.failed" and failed["data"]["error"]["code"]
    metrics = requests.get(f"{stack.server_url}/metrics", timeout=30).text
    assert 'ocr_webhook_attempts_total{outcome="delivered"}' in metrics
    assert 'ocr_webhook_deliveries_total{outcome="delivered"}' in metrics


def test_a_job_canceled_while_no_ocr_server_runs_is_told_once_one_starts(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    stack.ocr.stop(signal.SIGTERM)
    try:
        job_id = submit(stack, receiver.url)
        canceled = requests.delete(stack.url(f"/v1/jobs/{job_id}"), timeout=30).json()
        [pending] = canceled["webhook_deliveries"]
        assert (pending["event"], pending["status"]) == ("job.canceled", "pending")
        pending_gauge = requests.get(stack.url("/metrics"), timeout=30).text
        assert "ocr_webhook_deliveries_pending 1.0" in pending_gauge
    finally:
        stack.start_ocr()
    delivery = delivered(stack, job_id)
    [request] = receiver.wait_for(1)
    assert event(request.body, request.headers)["type"] == "job.canceled"
    assert request.headers["webhook-id"] == delivery["id"] == pending["id"]


def test_a_delivery_in_flight_when_its_ocr_server_is_killed_is_sent_again_by_the_next(
    stack: Stack, receiver: WebhookReceiver, db_engine_e2e: Engine
) -> None:
    hold = threading.Event()
    receiver.answers = [Answer(200, hold=hold)]
    job_id = submit(stack, receiver.url)
    [first] = receiver.wait_for(1, timeout_s=JOB_TIMEOUT_S)
    stack.ocr.stop(signal.SIGKILL, group=True)
    hold.set()  # the answer goes to a process that is gone
    in_flight = job(stack, job_id)["webhook_deliveries"][0]
    assert (in_flight["status"], in_flight["attempts"]) == ("pending", 1)
    stack.start_ocr()
    # Once the dead server's lease ends (OCR_LEASE_S + the 10 s attempt timeout), the new
    # one takes the delivery: its second attempt, under the same webhook-id.
    delivery = delivered(stack, job_id)
    second = receiver.received[1]
    assert delivery["attempts"] == 2 and len(receiver.received) == 2
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["id"]
    assert event(second.body, second.headers)["data"]["id"] == job_id
    with db_engine_e2e.connect() as conn:
        sender = conn.scalar(
            select(WebhookDeliveryRow.claimed_by).where(WebhookDeliveryRow.id == delivery["id"])
        )
    assert sender is not None


def test_two_ocr_servers_share_the_deliveries_and_never_send_one_twice(
    stack: Stack, receiver: WebhookReceiver, db_engine_e2e: Engine, tmp_path: Any
) -> None:
    env = {**stack.env, "OCR_SERVER_BIND": f"127.0.0.1:{free_port()}", "OCR_WORKERS": "1"}
    second = Service("ocr-server", env, tmp_path)
    gate = threading.Event()
    # Every answer waits until four attempts are open at once: each server sends at most two
    # at a time (OCR_WEBHOOK_CONCURRENCY), so both are sending.
    receiver.default = Answer(200, hold=gate)
    second.start()
    try:
        second.wait_healthy(f"http://{env['OCR_SERVER_BIND']}")
        ids = [submit(stack, receiver.url) for _ in range(10)]
        receiver.wait_for(4, timeout_s=JOB_TIMEOUT_S)
        gate.set()
        for job_id in ids:
            assert delivered(stack, job_id)["attempts"] == 1
    finally:
        gate.set()
        second.stop(signal.SIGTERM)
    sent = [request.headers["webhook-id"] for request in receiver.received]
    assert len(sent) == 10 and len(set(sent)) == 10
    with db_engine_e2e.connect() as conn:
        senders = conn.scalars(
            select(WebhookDeliveryRow.claimed_by).where(WebhookDeliveryRow.id.in_(sent))
        ).all()
    assert len(set(senders)) == 2


def test_a_refused_address_is_a_400_on_the_wire(stack: Stack) -> None:
    response = requests.post(
        stack.url("/v1/jobs?webhook_url=http://169.254.169.254/latest/meta-data/"),
        data=HELLO_PNG,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "webhook_address_refused"
