"""Webhooks on real databases with real receivers (HTTP servers these tests start): the outbox
row written by every way a job ends, and the OCR server's sender delivering, signing,
retrying, timing out, never following a redirect, and sharing the work with another sender."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server

from ocr_common import job_store
from ocr_common.models import (
    DeliveryAttempt,
    DeliveryStatus,
    JobOutcome,
    JobRow,
    JobStatus,
    WebhookDelivery,
    WebhookDeliveryRow,
)
from ocr_common.settings import Settings, load_settings
from ocr_server.metrics import DispatcherCounters
from ocr_server.webhooks import WebhookSender, event_body
from ocr_testkit.database import claim_next, fail, filed_document, finish, statements_sent
from ocr_testkit.stack import free_port
from ocr_testkit.waits import wait_until_async
from ocr_testkit.webhook_receiver import (
    Answer,
    Received,
    WebhookReceiver,
    receiving,
    tls_contexts,
)

SECRET = "whsec_" + base64.b64encode(b"the current webhook secret, 32 b").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the secret before it, 32 bytes!!").decode()
IMAGE = b"\x89PNG fake image bytes"


def webhook_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "webhook_secret": SECRET,
        "webhook_allow": "127.0.0.1",
        "webhook_retry_schedule": "0.2,0.2,0.2",
        "poll_interval_s": 0.05,
        "lease_s": 1,
    }
    values.update(overrides)
    return load_settings(**values)


def queue(sessions: sessionmaker[Session], url: str | None, n: int = 1) -> list[str]:
    with sessions.begin() as session:
        return [
            job_store.create_job(
                session,
                document=filed_document(IMAGE + bytes([i])),
                max_attempts=3,
                webhook_url=url,
            ).id
            for i in range(n)
        ]


def end_job(sessions: sessionmaker[Session], url: str | None, how: str) -> str:
    """A job with ``url`` ended ``how``: succeeded, failed or canceled."""
    [job_id] = queue(sessions, url)
    with sessions.begin() as session:
        if how == "canceled":
            assert job_store.cancel(session, job_id)
            return job_id
        assert claim_next(session, worker_id="w1", lease_s=30) is not None
    with sessions.begin() as session:
        if how == "succeeded":
            assert finish(session, job_id=job_id, worker_id="w1", text="the text\n")
        else:
            assert fail(
                session, job_id=job_id, worker_id="w1", error_code="engine_crashed",
                error_message="it crashed",
            )  # fmt: skip
    return job_id


def deliveries(sessions: sessionmaker[Session], job_id: str) -> list[WebhookDelivery]:
    with sessions() as session:
        return job_store.job_deliveries(session, job_id)


def send_until(
    sessions: sessionmaker[Session],
    settings: Settings,
    done: Callable[[], Any],
    within_s: float = 20,
    senders: int = 1,
    **sender_args: Any,
) -> list[WebhookSender]:
    """Run ``senders`` senders until ``done()``; then stop them."""

    async def scenario() -> list[WebhookSender]:
        running = [
            WebhookSender(sessions, settings, DispatcherCounters(), **sender_args)
            for _ in range(senders)
        ]
        for sender in running:
            sender.start()
        try:
            await wait_until_async(done, within_s, "the deliveries", interval_s=0.05)
        finally:
            await asyncio.gather(*(sender.stop(grace_s=5) for sender in running))
        return running

    return asyncio.run(scenario())


def delivered(sessions: sessionmaker[Session], job_id: str) -> Callable[[], bool]:
    def check() -> bool:
        found = deliveries(sessions, job_id)
        return bool(found) and found[0].status != DeliveryStatus.PENDING

    return check


def counted(outcome: str, what: str = "attempts") -> float:
    """``ocr_webhook_{what}_total{outcome=...}`` as /metrics shows it now."""
    value = REGISTRY.get_sample_value(f"ocr_webhook_{what}_total", {"outcome": outcome})
    return value or 0.0


def verified(request: Received, secret: str = SECRET) -> dict[str, Any]:
    """The event, verified as a receiver verifies it (the Standard Webhooks library)."""
    return dict(Webhook(secret).verify(request.body, request.headers))


# -- the outbox --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["succeeded", "failed", "canceled"])
def test_the_transaction_that_ends_a_job_writes_its_delivery(
    sessions: sessionmaker[Session], how: str
) -> None:
    job_id = end_job(sessions, "https://example.com/hook", how)
    [delivery] = deliveries(sessions, job_id)
    assert delivery.event == f"job.{how}" and delivery.status == DeliveryStatus.PENDING
    assert delivery.attempts == 0 and delivery.id.startswith("msg_")
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None and delivery.created_at == job.finished_at
    assert delivery.next_attempt_at == job.finished_at


def test_a_job_without_a_webhook_url_gets_no_delivery(sessions: sessionmaker[Session]) -> None:
    ended = [end_job(sessions, None, how) for how in ("succeeded", "failed", "canceled")]
    with sessions() as session:
        assert session.scalars(select(WebhookDeliveryRow.id)).all() == []
    assert all(deliveries(sessions, job_id) == [] for job_id in ended)


def test_the_reaper_failing_a_job_out_of_attempts_writes_its_delivery(
    sessions: sessionmaker[Session],
) -> None:
    [exhausted, retried] = queue(sessions, "https://example.com/hook", 2)
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=2)
        session.execute(update(JobRow).where(JobRow.id == exhausted).values(max_attempts=1))
        session.execute(
            update(JobRow).values(lease_until=job_store.utcnow() - timedelta(seconds=1))
        )
    with sessions.begin() as session:
        assert job_store.requeue_expired(session) == (1, 1)
    assert [d.event for d in deliveries(sessions, exhausted)] == ["job.failed"]
    assert deliveries(sessions, retried) == []


def test_a_job_failed_for_its_missing_document_at_claim_writes_its_delivery(
    sessions: sessionmaker[Session],
) -> None:
    [job_id] = queue(sessions, "https://example.com/hook")
    with sessions.begin() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(document_key=None))
    with sessions.begin() as session:
        assert job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=1) == []
    assert [d.event for d in deliveries(sessions, job_id)] == ["job.failed"]


def test_a_batch_writes_a_delivery_for_each_job_with_a_url_and_none_for_a_lost_lease(
    sessions: sessionmaker[Session],
) -> None:
    hooked = queue(sessions, "https://example.com/hook", 3)
    [plain] = queue(sessions, None)
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=4)
        # The last hooked job was canceled meanwhile (its own delivery, job.canceled).
        assert job_store.cancel(session, hooked[2])
    outcomes = [
        JobOutcome(hooked[0], text="t"),
        JobOutcome(hooked[1], error_code="engine_timeout", error_message="slow"),
        JobOutcome(hooked[2], text="late"),
        JobOutcome(plain, text="t"),
    ]
    with sessions.begin() as session:
        written = job_store.finish_batch(session, worker_id="w1", outcomes=outcomes)
    assert written == [hooked[0], hooked[1], plain]
    events = {job_id: [d.event for d in deliveries(sessions, job_id)] for job_id in hooked}
    assert events == {
        hooked[0]: ["job.succeeded"],
        hooked[1]: ["job.failed"],
        hooked[2]: ["job.canceled"],
    }
    assert deliveries(sessions, plain) == []


def test_a_rolled_back_end_leaves_no_delivery(sessions: sessionmaker[Session]) -> None:
    [job_id] = queue(sessions, "https://example.com/hook")
    with pytest.raises(RuntimeError), sessions.begin() as session:
        assert job_store.cancel(session, job_id)
        raise RuntimeError("the transaction fails after the cancel")
    assert deliveries(sessions, job_id) == []
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None and job.status == JobStatus.QUEUED


def test_deleting_a_finished_job_deletes_its_deliveries(sessions: sessionmaker[Session]) -> None:
    job_id = end_job(sessions, "https://example.com/hook", "succeeded")
    with sessions.begin() as session:
        assert job_store.delete_finished(session, job_id)
    with sessions() as session:
        assert session.scalars(select(WebhookDeliveryRow.id)).all() == []


# -- the sender ---------------------------------------------------------------------------------


def test_each_ending_is_delivered_signed_as_standard_webhooks_says(
    sessions: sessionmaker[Session],
) -> None:
    with receiving() as receiver:
        ids = {how: end_job(sessions, receiver.url, how) for how in ("succeeded", "failed")}
        ids["canceled"] = end_job(sessions, receiver.url, "canceled")
        # Two secrets (a rotation under way): a receiver that knows either verifies each.
        settings = webhook_settings(webhook_secret=f"{SECRET} {OLD_SECRET}")
        send_until(sessions, settings, lambda: len(receiver.received) >= 3)
    events = {}
    for request in receiver.received:
        event = verified(request)
        assert verified(request, OLD_SECRET) == event
        events[event["data"]["id"]] = event
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["webhook-id"].startswith("msg_")
    assert len(receiver.received) == 3 and set(events) == set(ids.values())
    for how, job_id in ids.items():
        event = events[job_id]
        assert event["type"] == f"job.{how}"
        assert event["data"]["status"] == how and event["data"]["webhook_url"] == receiver.url
        assert event["data"]["links"]["job"] == f"/v1/jobs/{job_id}"
        assert "text" not in event["data"] and "pages" not in event["data"]
        [delivery] = deliveries(sessions, job_id)
        assert (delivery.status, delivery.attempts, delivery.last_status) == (
            DeliveryStatus.DELIVERED,
            1,
            200,
        )
        assert delivery.next_attempt_at is None and delivery.last_error is None
    assert events[ids["succeeded"]]["data"]["links"]["text"].endswith("?format=text")
    assert events[ids["failed"]]["data"]["error"]["code"] == "engine_crashed"
    other = "whsec_" + base64.b64encode(b"a secret nobody told the receiver").decode()
    with pytest.raises(WebhookVerificationError):
        verified(receiver.received[0], other)


def test_a_receiver_down_then_up_gets_the_delivery_under_the_same_id(
    sessions: sessionmaker[Session],
) -> None:
    receiver = WebhookReceiver()  # not started: its port refuses connections
    job_id = end_job(sessions, receiver.url, "succeeded")
    settings = webhook_settings(webhook_retry_schedule="0.3,0.3,0.3,0.3,0.3,0.3")
    before = counted("unreachable"), counted("delivered"), counted("delivered", "deliveries")

    failed_at: set[object] = set()  # when each refused attempt ended

    def first_failure_then_up() -> bool:
        found = deliveries(sessions, job_id)[0]
        if found.last_error is not None and receiver._server is None:
            failed_at.add(found.last_attempt_at)
        # Up once two attempts have ended refused: attempts counts one as it starts, so the
        # second may still be on its way when attempts says 2.
        if len(failed_at) >= 2 and receiver._server is None:
            assert found.last_error is not None and "Connect" in found.last_error
            receiver.start()
        return found.status == DeliveryStatus.DELIVERED

    try:
        send_until(sessions, settings, first_failure_then_up)
    finally:
        receiver.stop()
    [request] = receiver.received
    [delivery] = deliveries(sessions, job_id)
    assert request.headers["webhook-id"] == delivery.id
    assert delivery.attempts >= 3 and delivery.last_status == 200
    assert verified(request)["data"]["id"] == job_id
    assert counted("unreachable") == before[0] + delivery.attempts - 1
    assert (counted("delivered"), counted("delivered", "deliveries")) == (
        before[1] + 1,
        before[2] + 1,
    )


def test_errors_are_retried_on_the_schedule_then_given_up(
    sessions: sessionmaker[Session],
) -> None:
    with receiving() as receiver:
        receiver.default = Answer(500)
        job_id = end_job(sessions, receiver.url, "failed")
        settings = webhook_settings(webhook_retry_schedule="0.5,1")
        before = counted("http_error"), counted("failed", "deliveries")
        started = time.monotonic()
        send_until(sessions, settings, delivered(sessions, job_id))
        time.sleep(0.5)  # nothing more comes
    requests = receiver.received
    assert len(requests) == 3 and len({r.headers["webhook-id"] for r in requests}) == 1
    # The schedule, with its jitter of 20 %: 0.5 s, then 1 s.
    gaps = [later.at - earlier.at for earlier, later in zip(requests, requests[1:], strict=False)]
    assert 0.4 <= gaps[0] <= 1.5 and 0.8 <= gaps[1] <= 2.5, gaps
    assert requests[0].at - started < 2
    [delivery] = deliveries(sessions, job_id)
    assert (delivery.status, delivery.attempts, delivery.last_status) == (
        DeliveryStatus.FAILED,
        3,
        500,
    )
    assert delivery.last_error == "the receiver answered HTTP 500"
    assert delivery.next_attempt_at is None
    assert counted("http_error") == before[0] + 3
    assert counted("failed", "deliveries") == before[1] + 1
    # Every attempt is signed afresh: its own timestamp, the same id, a valid signature.
    assert all(verified(request)["data"]["id"] == job_id for request in requests)


def test_a_slow_receiver_times_out_and_holds_back_no_other_delivery(
    sessions: sessionmaker[Session],
) -> None:
    with receiving() as slow, receiving() as fast:
        slow.answers = [Answer(200, delay_s=3)]
        slow_job = end_job(sessions, slow.url, "succeeded")
        fast_jobs = [end_job(sessions, fast.url, "succeeded") for _ in range(5)]
        settings = webhook_settings(webhook_retry_schedule="0.2")

        def fast_done_then_slow() -> bool:
            return all(delivered(sessions, j)() for j in [*fast_jobs, slow_job])

        send_until(sessions, settings, fast_done_then_slow, timeout_s=1)
    # Each fast delivery was made before the slow one's attempt had timed out.
    assert len(fast.received) == 5
    assert max(r.at for r in fast.received) < slow.received[1].at
    [delivery] = deliveries(sessions, slow_job)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert len(slow.received) == 2


def test_the_timeout_is_an_attempt_that_failed(sessions: sessionmaker[Session]) -> None:
    with receiving() as receiver:
        hold = threading.Event()
        receiver.default = Answer(200, hold=hold)
        job_id = end_job(sessions, receiver.url, "succeeded")
        settings = webhook_settings(webhook_retry_schedule="")
        timeouts = counted("timeout")
        try:
            send_until(sessions, settings, delivered(sessions, job_id), timeout_s=1)
        finally:
            hold.set()
    assert counted("timeout") == timeouts + 1
    [delivery] = deliveries(sessions, job_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "no answer within 1 s" and delivery.last_status is None


def test_a_redirect_is_not_followed(sessions: sessionmaker[Session]) -> None:
    with receiving() as target, receiving() as receiver:
        receiver.default = Answer(307, headers={"Location": target.url})
        job_id = end_job(sessions, receiver.url, "succeeded")
        send_until(
            sessions, webhook_settings(webhook_retry_schedule=""), delivered(sessions, job_id)
        )
    assert len(receiver.received) == 1 and target.received == []
    [delivery] = deliveries(sessions, job_id)
    assert (delivery.status, delivery.last_status) == (DeliveryStatus.FAILED, 307)


def test_at_most_64_kb_of_an_answer_is_read(sessions: sessionmaker[Session]) -> None:
    with receiving() as receiver:
        # 64 MB more than any socket buffer holds: the receiver cannot write it all unless
        # the sender reads it.
        receiver.default = Answer(200, body=bytes(64 * 1024 * 1024))
        job_id = end_job(sessions, receiver.url, "succeeded")
        send_until(sessions, webhook_settings(), delivered(sessions, job_id))
        receiver.wait_for_broken_answers(1)
    [delivery] = deliveries(sessions, job_id)
    assert (delivery.status, delivery.last_status) == (DeliveryStatus.DELIVERED, 200)


def test_a_sender_that_vanished_mid_attempt_loses_it_to_another(
    sessions: sessionmaker[Session],
) -> None:
    with receiving() as receiver:
        job_id = end_job(sessions, receiver.url, "succeeded")
        # A sender claims the delivery, then vanishes (its lease: 0.5 s).
        with sessions.begin() as session:
            [gone] = job_store.claim_deliveries(session, sender_id="gone", lease_s=0.5, limit=5)
        settings = webhook_settings()
        claimed_at = time.monotonic()
        send_until(sessions, settings, delivered(sessions, job_id))
    [request] = receiver.received
    assert request.at - claimed_at >= 0.4
    [delivery] = deliveries(sessions, job_id)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert request.headers["webhook-id"] == gone.id == delivery.id
    # The vanished sender comes back: its attempt's outcome is refused.
    with sessions.begin() as session:
        late = DeliveryAttempt(gone.id, gone.attempts, DeliveryStatus.FAILED, None, error="late")
        assert job_store.record_attempts(session, sender_id="gone", attempts=[late]) == []
    assert deliveries(sessions, job_id)[0].status == DeliveryStatus.DELIVERED


def test_two_senders_never_send_one_attempt_twice(sessions: sessionmaker[Session]) -> None:
    with receiving() as receiver:
        ids = queue(sessions, receiver.url, 120)
        with sessions.begin() as session:
            job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=120)
            job_store.finish_batch(
                session, worker_id="w1", outcomes=[JobOutcome(i, text="t") for i in ids]
            )
        settings = webhook_settings(webhook_concurrency=8)
        senders = send_until(
            sessions, settings, lambda: len(receiver.received) >= 120, senders=2, within_s=60
        )
        time.sleep(0.3)
    received = [request.headers["webhook-id"] for request in receiver.received]
    assert len(received) == 120 and len(set(received)) == 120
    with sessions() as session:
        rows = session.execute(
            select(
                WebhookDeliveryRow.status,
                WebhookDeliveryRow.attempts,
                WebhookDeliveryRow.claimed_by,
            )
        ).all()
    assert {(status, attempts) for status, attempts, _ in rows} == {("delivered", 1)}
    # Both took part.
    assert {sender for _, _, sender in rows} == {sender.sender_id for sender in senders}


def test_the_event_body_is_the_jobs_summary_without_its_text(
    sessions: sessionmaker[Session],
) -> None:
    job_id = end_job(sessions, "https://user:pw@example.com/hook?token=t", "succeeded")
    with sessions.begin() as session:
        [claimed] = job_store.claim_deliveries(session, sender_id="s", lease_s=30, limit=1)
    body = event_body(claimed)
    assert body["type"] == "job.succeeded" and body["timestamp"].endswith("Z")
    assert body["data"]["id"] == job_id and body["data"]["status"] == "succeeded"
    assert body["data"]["webhook_url"] == "https://user:***@example.com/hook?token=t"
    assert "the text" not in json.dumps(body)


# -- never aimed inward -------------------------------------------------------------------------


def pointing(table: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    """A resolver the test points: host -> its addresses (one lookup each, recorded)."""

    def resolve(host: str, _port: int, _family: int) -> list[tuple[int, str]]:
        if calls is not None:
            calls.append(host)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in table[host]]

    return resolve


def refused_delivery(sessions: sessionmaker[Session], url: str, **sender_args: Any) -> str:
    """End a job whose webhook is ``url`` (stored as is: the allow list may have changed since
    it was accepted), send with no allow list; the delivery's error."""
    job_id = end_job(sessions, url, "succeeded")
    settings = webhook_settings(webhook_allow="", webhook_retry_schedule="0.1,0.1")
    before = counted("refused"), counted("failed", "deliveries")
    send_until(sessions, settings, delivered(sessions, job_id), **sender_args)
    assert (counted("refused"), counted("failed", "deliveries")) == (before[0] + 1, before[1] + 1)
    [delivery] = deliveries(sessions, job_id)
    # Given up at once, without retrying: the address will not change by waiting.
    assert (delivery.status, delivery.attempts, delivery.last_status) == (
        DeliveryStatus.FAILED,
        1,
        None,
    )
    assert delivery.last_error is not None
    return delivery.last_error


def test_a_receiver_on_a_refused_address_gets_no_request(sessions: sessionmaker[Session]) -> None:
    with receiving() as receiver:
        error = refused_delivery(sessions, receiver.url)
    assert error == "127.0.0.1 is a loopback address"
    assert receiver.received == []


def test_a_name_the_system_resolves_to_loopback_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    with receiving() as receiver:
        error = refused_delivery(sessions, f"http://localhost:{receiver.port}/hook")
    assert error.startswith("localhost resolves to ") and error.endswith("a loopback address")
    assert receiver.received == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.7", "private"),
        ("172.20.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.100.100.200", "shared (carrier-grade NAT)"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "unique-local"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_a_name_that_resolves_to_a_refused_address_is_a_failed_delivery(
    sessions: sessionmaker[Session], address: str, reason: str
) -> None:
    calls: list[str] = []
    resolve = pointing({"hooks.test": [address]}, calls)
    error = refused_delivery(sessions, "https://hooks.test/hook", resolve=resolve)
    assert error.startswith(f"hooks.test resolves to {ipaddress.ip_address(address)}, a {reason}")
    assert calls == ["hooks.test"]


def test_a_name_with_one_refused_address_among_public_ones_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    resolve = pointing({"hooks.test": ["93.184.215.14", "127.0.0.1"]})
    error = refused_delivery(sessions, "http://hooks.test/", resolve=resolve)
    assert error == "hooks.test resolves to 127.0.0.1, a loopback address"


def test_the_name_is_looked_up_once_and_that_address_connected_to(
    sessions: sessionmaker[Session],
) -> None:
    # A rebinding name: an allowed address first, a refused one on every later lookup.
    answers = iter([["127.0.0.2"]])
    calls: list[str] = []

    def rebinding(host: str, port: int, family: int) -> list[tuple[int, str]]:
        calls.append(host)
        return [(socket.AF_INET, address) for address in next(answers, ["127.0.0.1"])]

    with receiving(host="127.0.0.2") as allowed, receiving(port=allowed.port) as inward:
        job_id = end_job(sessions, f"http://rebind.test:{allowed.port}/hook", "succeeded")
        settings = webhook_settings(webhook_allow="127.0.0.2")
        send_until(sessions, settings, delivered(sessions, job_id), resolve=rebinding)
    assert len(allowed.received) == 1 and inward.received == []
    assert calls == ["rebind.test"]
    assert deliveries(sessions, job_id)[0].status == DeliveryStatus.DELIVERED


def test_a_redirect_to_a_refused_address_is_not_followed(sessions: sessionmaker[Session]) -> None:
    with receiving(host="127.0.0.3") as inward, receiving() as receiver:
        receiver.default = Answer(302, headers={"Location": inward.url})
        job_id = end_job(sessions, receiver.url, "succeeded")
        settings = webhook_settings(webhook_retry_schedule="")
        send_until(sessions, settings, delivered(sessions, job_id))
    assert len(receiver.received) == 1 and inward.received == []
    [delivery] = deliveries(sessions, job_id)
    assert (delivery.status, delivery.last_status) == (DeliveryStatus.FAILED, 302)


def test_https_to_the_looked_up_address_still_checks_the_certificate_against_the_name(
    sessions: sessionmaker[Session],
) -> None:
    server_tls, client_tls = tls_contexts(["hooks.test"])
    with receiving(tls=server_tls) as receiver:
        resolve = pointing({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        good = end_job(sessions, f"https://hooks.test:{receiver.port}/hook", "succeeded")
        wrong = end_job(sessions, f"https://other.test:{receiver.port}/hook", "succeeded")
        settings = webhook_settings(webhook_retry_schedule="")
        both = lambda: delivered(sessions, good)() and delivered(sessions, wrong)()  # noqa: E731
        send_until(sessions, settings, both, resolve=resolve, tls=client_tls)
    assert deliveries(sessions, good)[0].status == DeliveryStatus.DELIVERED
    [refused] = deliveries(sessions, wrong)
    assert refused.status == DeliveryStatus.FAILED and refused.last_error is not None
    assert "other.test" in refused.last_error and "certificate" in refused.last_error.lower()
    assert [verified(r)["data"]["id"] for r in receiver.received] == [good]


def test_credentials_in_the_url_are_sent_but_never_logged(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = WebhookReceiver()
    url = f"http://hook-user:s3cr3t-pw@127.0.0.1:{receiver.port}/hook?token=t0k3n"
    job_id = end_job(sessions, url, "succeeded")

    def down_then_up() -> bool:
        if deliveries(sessions, job_id)[0].attempts >= 1 and receiver._server is None:
            receiver.start()
        return delivered(sessions, job_id)()

    caplog.set_level(logging.DEBUG)
    try:
        send_until(sessions, webhook_settings(), down_then_up)
    finally:
        receiver.stop()
    [request] = receiver.received
    assert request.path == "/hook?token=t0k3n"
    expected = base64.b64encode(b"hook-user:s3cr3t-pw").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    logged = caplog.text
    assert f"http://127.0.0.1:{receiver.port}" in logged
    assert "s3cr3t-pw" not in logged and "t0k3n" not in logged
    with sessions() as session:
        errors = session.scalars(select(WebhookDeliveryRow.last_error)).all()
    assert not any("s3cr3t" in (error or "") for error in errors)


def test_attempts_that_end_together_are_written_by_one_update(
    sessions: sessionmaker[Session],
) -> None:
    ids = [end_job(sessions, "https://example.com/hook", "succeeded") for _ in range(4)]
    with sessions.begin() as session:
        claimed = job_store.claim_deliveries(session, sender_id="s", lease_s=30, limit=3)
        [stale] = job_store.claim_deliveries(session, sender_id="s", lease_s=0.2, limit=1)
    assert stale.job.id == ids[3]
    time.sleep(0.3)
    with sessions.begin() as session:
        # The stale one's lease ran out and another sender took it: its next attempt.
        [taken] = job_store.claim_deliveries(session, sender_id="t", lease_s=30, limit=1)
    assert taken.id == stale.id and taken.attempts == 2
    by_job = {d.job.id: d for d in claimed}
    later = job_store.utcnow() + timedelta(minutes=5)
    attempts = [
        DeliveryAttempt(by_job[ids[0]].id, 1, DeliveryStatus.DELIVERED, None, 204),
        DeliveryAttempt(by_job[ids[1]].id, 1, DeliveryStatus.PENDING, later, 503, "HTTP 503"),
        DeliveryAttempt(by_job[ids[2]].id, 1, DeliveryStatus.FAILED, None, None, "refused"),
        DeliveryAttempt(stale.id, 1, DeliveryStatus.FAILED, None, None, "late"),
    ]
    with sessions.begin() as session, statements_sent(session.connection().engine) as sent:
        written = job_store.record_attempts(session, sender_id="s", attempts=attempts)
    assert written == [a.delivery_id for a in attempts[:3]]
    assert sum(statement.startswith("UPDATE") for statement, _ in sent) == 1
    shown = [deliveries(sessions, job_id)[0] for job_id in ids]
    assert [(d.status, d.attempts, d.last_status, d.last_error) for d in shown] == [
        (DeliveryStatus.DELIVERED, 1, 204, None),
        (DeliveryStatus.PENDING, 1, 503, "HTTP 503"),
        (DeliveryStatus.FAILED, 1, None, "refused"),
        (DeliveryStatus.PENDING, 2, None, None),
    ]
    assert shown[1].next_attempt_at == later and shown[0].next_attempt_at is None


def test_the_receiver_in_the_docs_takes_a_real_delivery_and_refuses_a_forged_one(
    sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    found = re.search(r"```python\n(from flask import Flask, request\n.*?)```", docs, re.S)
    assert found is not None
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(found.group(1).replace('"whsec_..."', repr(SECRET)), namespace)  # noqa: S102
    port = free_port()
    server = make_server("127.0.0.1", port, namespace["app"], threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{port}/ocr-events"
        job_id = end_job(sessions, url, "succeeded")
        send_until(sessions, webhook_settings(), delivered(sessions, job_id))
        forged = requests.post(
            url,
            data=b'{"type": "job.succeeded"}',
            headers={
                "webhook-id": "msg_x",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAA",
            },  # fmt: skip
            timeout=10,
        )
    finally:
        server.shutdown()
    [delivery] = deliveries(sessions, job_id)
    assert (delivery.status, delivery.last_status) == (DeliveryStatus.DELIVERED, 204)
    assert f"job.succeeded {job_id} succeeded" in capsys.readouterr().out
    assert forged.status_code == 400
