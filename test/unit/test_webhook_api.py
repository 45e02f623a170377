"""``webhook_url`` on ``POST /v1/jobs`` through Flask's test client on a real database: how it
is sent, checked, stored and shown, with its deliveries."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from fake_ocr import api_client
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api_server.schemas import Job, Problem
from ocr_common import job_store
from ocr_common.models import DeliveryAttempt, DeliveryStatus
from ocr_common.settings import hash_api_key
from ocr_testkit.pages import HELLO_PNG

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOOK = "https://hooks.example/ocr?token=t0k"
ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"
KEYS = f"alice={hash_api_key(ALICE)},bob={hash_api_key(BOB)}"


@pytest.fixture
def client(sessions: sessionmaker[Session]) -> FlaskClient:
    return api_client(sessions, webhook_secret=SECRET)


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    Problem.model_validate(body)
    assert body["code"] == code
    return dict(body)


def accepted(response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.get_data(as_text=True)
    return Job.model_validate(response.get_json()).model_dump(mode="json")


def document_b64() -> str:
    return base64.b64encode(HELLO_PNG).decode()


def test_a_webhook_url_comes_as_a_json_field_a_form_field_or_a_query_parameter(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    sent = [
        client.post("/v1/jobs", json={"document": document_b64(), "webhook_url": HOOK}),
        client.post(
            "/v1/jobs", data={"file": (io.BytesIO(HELLO_PNG), "p.png"), "webhook_url": HOOK}
        ),
        client.post(
            "/v1/jobs", query_string={"webhook_url": HOOK}, data=HELLO_PNG, content_type="image/png"
        ),
    ]
    for response in sent:
        job = accepted(response)
        assert job["webhook_url"] == HOOK and job["webhook_deliveries"] == []
        shown = Job.model_validate(client.get(f"/v1/jobs/{job['id']}").get_json())
        assert shown.webhook_url == HOOK
        with sessions() as session:
            stored = job_store.get_job(session, job["id"])
        assert stored is not None and stored.webhook_url == HOOK
    listed = client.get("/v1/jobs").get_json()["jobs"]
    assert [job["webhook_url"] for job in listed] == [HOOK] * 3


def test_a_job_without_one_shows_none(client: FlaskClient) -> None:
    job = accepted(client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png"))
    assert job["webhook_url"] is None and job["webhook_deliveries"] is None


def test_the_url_is_stored_as_browsers_parse_it_and_a_password_never_shown(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    url = "HTTPS://user:pa55@Hooks.Example/a b"
    job = accepted(client.post("/v1/jobs", json={"document": document_b64(), "webhook_url": url}))
    assert job["webhook_url"] == "https://user:***@hooks.example/a%20b"
    with sessions() as session:
        stored = job_store.get_job(session, job["id"])
    assert stored is not None and stored.webhook_url == "https://user:pa55@hooks.example/a%20b"


@pytest.mark.parametrize(
    "value", ["ftp://hooks.example/", "hooks.example/x", 7, ["https://x.example"], "x" * 2049]
)
def test_a_bad_url_is_a_400_naming_the_field(client: FlaskClient, value: object) -> None:
    response = client.post("/v1/jobs", json={"document": document_b64(), "webhook_url": value})
    assert problem(response, 400, "invalid_option")["field"] == "webhook_url"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5001/jobs/notify",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://[fd00::1]/",
    ],
)
def test_a_refused_address_is_a_400_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], url: str
) -> None:
    response = client.post("/v1/jobs", query_string={"webhook_url": url}, data=HELLO_PNG,
                           content_type="image/png")  # fmt: skip
    body = problem(response, 400, "webhook_address_refused")
    assert body["field"] == "webhook_url"
    with sessions() as session:
        assert job_store.count_by_status(session)["queued"] == 0


def test_the_operator_may_allow_a_network(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, webhook_secret=SECRET, webhook_allow="10.0.0.0/8")
    job = accepted(
        client.post(
            "/v1/jobs", json={"document": document_b64(), "webhook_url": "http://10.1.2.3/"}
        )
    )
    assert job["webhook_url"] == "http://10.1.2.3/"


def test_without_a_secret_a_webhook_url_is_refused(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions)
    response = client.post("/v1/jobs", json={"document": document_b64(), "webhook_url": HOOK})
    assert "OCR_WEBHOOK_SECRET" in problem(response, 400, "webhooks_disabled")["detail"]


def test_only_queued_jobs_take_one(client: FlaskClient) -> None:
    response = client.post("/v1/ocr", json={"document": document_b64(), "webhook_url": HOOK})
    body = problem(response, 400, "unknown_option")
    assert body["field"] == "webhook_url" and body["detail"].endswith(", lang, format")


def test_an_unknown_option_is_told_every_name_the_endpoint_takes(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json={"document": document_b64(), "webhok_url": HOOK})
    assert problem(response, 400, "unknown_option")["detail"].endswith(", lang, webhook_url")


def test_an_api_key_may_have_a_default_url(sessions: sessionmaker[Session]) -> None:
    default = "https://alice.example/hook"
    client = api_client(
        sessions, webhook_secret=SECRET, api_keys=KEYS, webhook_defaults={"alice": default}
    )
    alice, bob = {"X-API-Key": ALICE}, {"X-API-Key": BOB}
    raw = {"data": HELLO_PNG, "content_type": "image/png"}
    assert accepted(client.post("/v1/jobs", headers=alice, **raw))["webhook_url"] == default
    assert accepted(client.post("/v1/jobs", headers=bob, **raw))["webhook_url"] is None
    chosen = client.post("/v1/jobs", headers=alice, query_string={"webhook_url": HOOK}, **raw)
    assert accepted(chosen)["webhook_url"] == HOOK


def test_the_same_idempotency_key_with_another_url_is_another_request(
    client: FlaskClient,
) -> None:
    key = {"Idempotency-Key": "one"}
    raw = {"data": HELLO_PNG, "content_type": "image/png", "headers": key}
    first = accepted(client.post("/v1/jobs", query_string={"webhook_url": HOOK}, **raw))
    again = client.post("/v1/jobs", query_string={"webhook_url": HOOK}, **raw)
    assert accepted(again)["id"] == first["id"]
    other = client.post("/v1/jobs", query_string={"webhook_url": HOOK + "x"}, **raw)
    problem(other, 409, "idempotency_key_reused")
    problem(client.post("/v1/jobs", **raw), 409, "idempotency_key_reused")


def test_the_job_shows_its_deliveries(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    job = accepted(client.post("/v1/jobs", json={"document": document_b64(), "webhook_url": HOOK}))
    canceled = client.delete(f"/v1/jobs/{job['id']}")
    assert canceled.status_code == 200
    [pending] = Job.model_validate(canceled.get_json()).model_dump(mode="json")[
        "webhook_deliveries"
    ]
    assert pending["event"] == "job.canceled" and pending["status"] == "pending"
    assert pending["attempts"] == 0 and pending["next_attempt_at"] is not None
    with sessions.begin() as session:
        [claimed] = job_store.claim_deliveries(session, sender_id="s", lease_s=30, limit=1)
    with sessions.begin() as session:
        later = job_store.utcnow()
        attempt = DeliveryAttempt(
            claimed.id,
            claimed.attempts,
            DeliveryStatus.PENDING,
            later,
            http_status=503,
            error="the receiver answered HTTP 503",
        )
        assert job_store.record_attempts(session, sender_id="s", attempts=[attempt]) == [claimed.id]
    shown = client.get(f"/v1/jobs/{job['id']}").get_json()
    Job.model_validate(shown)
    [delivery] = shown["webhook_deliveries"]
    assert delivery == {
        **delivery,
        "id": pending["id"],
        "status": "pending",
        "attempts": 1,
        "last_status": 503,
        "last_error": "the receiver answered HTTP 503",
        "next_attempt_at": later.isoformat(timespec="microseconds") + "Z",
    }
    assert delivery["last_attempt_at"] is not None


def test_the_openapi_document_has_the_option_the_deliveries_and_the_event(
    client: FlaskClient,
) -> None:
    spec = client.get("/openapi.json").get_json()
    post = spec["paths"]["/v1/jobs"]["post"]
    assert "webhook_url" in [p["name"] for p in post["parameters"]]
    body = post["requestBody"]["content"]
    assert "webhook_url" in body["multipart/form-data"]["schema"]["properties"]
    assert body["application/json"]["schema"]["$ref"].endswith("/JsonJobDocument")
    ocr_body = spec["paths"]["/v1/ocr"]["post"]["requestBody"]["content"]
    assert "webhook_url" not in ocr_body["multipart/form-data"]["schema"]["properties"]
    schemas = spec["components"]["schemas"]
    assert "webhook_deliveries" in schemas["Job"]["properties"]
    assert "webhook_url" in schemas["JsonJobDocument"]["properties"]
    event = spec["webhooks"]["jobEnded"]["post"]
    assert event["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/WebhookEvent"
    )
    # Every delivery carries all three.
    assert {p["name"]: p["required"] for p in event["parameters"]} == {
        "webhook-id": True,
        "webhook-timestamp": True,
        "webhook-signature": True,
    }
