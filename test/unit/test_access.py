"""API keys (stored hashed, each key sees only its own jobs) and per-caller rate limits."""

from __future__ import annotations

import json

import pytest
from fake_ocr import api_client
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.settings import SettingsError, hash_api_key, load_settings, parse_api_keys
from ocr_testkit.pages import HELLO_PNG, b64

ALICE, BOB = "alice-key-0123456789", "bob-key-9876543210"
KEYS = f"alice={hash_api_key(ALICE)},{hash_api_key(BOB)}"


BODY = json.dumps({"image_data": b64(HELLO_PNG)})


def test_keys_are_parsed_from_hashes_with_optional_names() -> None:
    owners = parse_api_keys(KEYS)
    assert sorted(owners.values()) == sorted(["alice", hash_api_key(BOB)[7:23]])


@pytest.mark.parametrize("spec", ["plainkey", "alice=sha256:123", "bad name=" + hash_api_key("x")])
def test_plain_or_malformed_keys_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.setenv("OCR_API_KEYS", spec)
    with pytest.raises(SettingsError, match="OCR_API_KEYS") as info:
        load_settings()
    assert spec not in str(info.value)


def test_the_secrets_never_show_in_the_settings_repr() -> None:
    settings = load_settings(api_keys=KEYS, internal_token="s3cret-token")
    assert "s3cret-token" not in repr(settings)
    assert hash_api_key(BOB) not in repr(settings)
    assert settings.internal_token_value == "s3cret-token"


def test_without_a_key_the_api_answers_401(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, api_keys=KEYS)
    response = client.post("/image", data=BODY)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_api_key"
    wrong = client.post("/image", data=BODY, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.get_json()["error"]["code"] == "invalid_api_key"
    # Liveness stays open to probes.
    assert client.get("/healthz").status_code == 200


def test_each_key_sees_only_its_own_jobs(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, api_keys=KEYS)
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"X-API-Key": BOB}
    alice_id = client.post("/image", data=BODY, headers=alice).get_json()["task_id"]
    bob_id = client.post("/image", data=BODY, headers=bob).get_json()["task_id"]
    assert client.get(f"/image?task_id={alice_id}", headers=alice).status_code == 200
    # Someone else's id is answered as if it did not exist.
    assert client.get(f"/image?task_id={alice_id}", headers=bob).status_code == 404
    assert client.get(f"/image?task_id={bob_id}", headers=alice).status_code == 404
    assert list(client.get("/allimages", headers=alice).get_json()) == [alice_id]
    assert list(client.get("/allimages", headers=bob).get_json()) == [bob_id]


def test_a_repeated_image_is_reused_only_within_one_owner(
    sessions: sessionmaker[Session],
) -> None:
    client = api_client(sessions, api_keys=KEYS)
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"X-API-Key": BOB}
    assert client.post("/image-sync", data=BODY, headers=alice).status_code == 200
    # Bob's identical image is queued for reading, not answered from Alice's result.
    bob_id = client.post("/image", data=BODY, headers=bob).get_json()["task_id"]
    assert client.get("/image", json={"task_id": bob_id}, headers=bob).get_json() == {
        "task_id": None
    }


def test_rate_limit_answers_429_with_retry_after(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, api_keys=KEYS, rate_limit="3/minute")
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"X-API-Key": BOB}
    statuses = [client.get("/allimages", headers=alice).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/allimages", headers=alice)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.get_json()["error"]["code"] == "rate_limited"
    # The limit is per key: Bob is not affected, and probes never are.
    assert client.get("/allimages", headers=bob).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_v1_jobs_belong_to_their_key(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, api_keys=KEYS)
    alice = {"Authorization": f"Bearer {ALICE}", "Content-Type": "image/png"}
    bob = {"X-API-Key": BOB}
    assert client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png").status_code == 401
    created = client.post("/v1/jobs", data=HELLO_PNG, headers=alice)
    assert created.status_code == 202
    job_id = created.get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert [job["id"] for job in client.get("/v1/jobs", headers=alice).get_json()["jobs"]] == [
        job_id
    ]
    assert client.get("/v1/jobs", headers=bob).get_json()["jobs"] == []
    # The original API's listing keeps v1 jobs of other keys out too.
    assert job_id not in client.get("/allimages", headers=bob).get_json()


def test_v1_idempotency_keys_belong_to_their_caller(sessions: sessionmaker[Session]) -> None:
    client = api_client(sessions, api_keys=KEYS)
    alice = {"Authorization": f"Bearer {ALICE}", "Idempotency-Key": "order-1"}
    bob = {"X-API-Key": BOB, "Idempotency-Key": "order-1"}
    first = client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png", headers=alice)
    again = client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png", headers=alice)
    other = client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png", headers=bob)
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert other.get_json()["id"] != first.get_json()["id"]
