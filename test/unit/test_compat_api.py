"""The original API through Flask's test client, with a fake OCR server and a real database."""

from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any

import pytest
from fake_ocr import UNREADABLE, FakeOcr, api_client
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_testkit.database import claim_next, fail, finish, seen_ocr_server
from ocr_testkit.pages import (
    HELLO,
    HELLO_PNG,
    b64,
    encode,
    render_document,
    render_lines,
    render_page_image,
)

SECOND_PNG = render_lines(["Second page"])
UNREADABLE_PNG = HELLO_PNG + UNREADABLE


@pytest.fixture
def fake_ocr() -> FakeOcr:
    """Reads a fixed text per image."""
    return FakeOcr({HELLO_PNG: "Hello OCR\n", SECOND_PNG: "Second page\n"})


@pytest.fixture
def client(sessions: sessionmaker[Session], fake_ocr: FakeOcr) -> FlaskClient:
    return api_client(sessions, fake_ocr, max_upload_bytes=200_000)


def body(image: bytes = HELLO_PNG) -> str:
    return json.dumps({"image_data": b64(image)})


def test_image_sync_answers_text_with_exactly_that_key(client: FlaskClient) -> None:
    response = client.post("/image-sync", data=body())
    assert response.status_code == 200
    assert response.get_json() == {"text": "Hello OCR\n"}


def test_image_sync_is_recorded_as_a_finished_job(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    client.post("/image-sync", data=body())
    with sessions() as session:
        [job] = job_store.list_recent(session, limit=10)
    assert job.kind == "sync" and job.text == "Hello OCR\n" and job.status.value == "succeeded"
    assert client.get("/allimages").get_json() == {job.id: "Hello OCR\n"}


def test_image_sync_list_keeps_the_order(client: FlaskClient) -> None:
    data = json.dumps({"image_data": [b64(SECOND_PNG), b64(HELLO_PNG)]})
    response = client.post("/image-sync/", data=data, content_type="application/json;")
    assert response.get_json() == {"text": ["Second page\n", "Hello OCR\n"]}


def test_image_sync_is_503_with_retry_after_when_ocr_is_down(
    client: FlaskClient, fake_ocr: FakeOcr, sessions: sessionmaker[Session]
) -> None:
    fake_ocr.down = True
    response = client.post("/image-sync", data=body())
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["code"] == "ocr_unavailable"
    with sessions() as session:
        assert job_store.list_recent(session, limit=10) == []


def test_image_sync_engine_failure_is_422_and_recorded(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = client.post("/image-sync", data=body(UNREADABLE_PNG))
    assert response.status_code == 422
    with sessions() as session:
        [job] = job_store.list_recent(session, limit=10)
    assert job.status.value == "failed" and job.error_code == "engine_error"


def test_post_image_commits_a_queued_job_and_notifies(
    client: FlaskClient, fake_ocr: FakeOcr, sessions: sessionmaker[Session]
) -> None:
    response = client.post("/image", data=body(), content_type="application/x-www-form-urlencoded")
    task_id = response.get_json()["task_id"]
    assert uuid.UUID(task_id)
    assert fake_ocr.notified == 1
    with sessions() as session:
        job = job_store.get_job(session, task_id)
    assert job is not None and job.status.value == "queued"
    # Pending: the original API answers null.
    pending = client.get("/image", data=json.dumps({"task_id": task_id}))
    assert pending.status_code == 200 and pending.get_json() == {"task_id": None}


def finish_all(sessions: sessionmaker[Session], text: str) -> None:
    with sessions.begin() as session:
        while (claimed := claim_next(session, worker_id="w", lease_s=30)) is not None:
            finish(session, job_id=claimed.id, worker_id="w", text=text)


@pytest.mark.parametrize(
    "how", ["json-body", "json-body-slash", "query-task_id", "query-id", "body-with-accept"]
)
def test_get_image_returns_the_text_however_the_id_is_given(
    client: FlaskClient, sessions: sessionmaker[Session], how: str
) -> None:
    task_id = client.post("/image/", data=body()).get_json()["task_id"]
    finish_all(sessions, "done\n")
    if how == "json-body":
        response = client.get("/image", data=json.dumps({"task_id": task_id}))
    elif how == "json-body-slash":
        response = client.get("/image/", data=json.dumps({"task_id": task_id}))
    elif how == "query-task_id":
        response = client.get(f"/image?task_id={task_id}")
    elif how == "query-id":
        response = client.get(f"/image?id={task_id}")
    else:
        response = client.get(
            "/image", data=json.dumps({"task_id": task_id}), headers={"Accept": "text/html"}
        )
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json()["task_id"] == "done\n"
    # Reading does not consume the result.
    again = client.get(f"/image?task_id={task_id}")
    assert again.get_json()["task_id"] == "done\n"


def test_failed_job_answers_422_with_the_reason(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    task_id = client.post("/image", data=body()).get_json()["task_id"]
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="w", lease_s=30)
        assert claimed is not None
        fail(
            session,
            job_id=claimed.id,
            worker_id="w",
            error_code="engine_crashed",
            error_message="the engine crashed",
        )
    response = client.get(f"/image?task_id={task_id}")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "engine_crashed"
    assert "the engine crashed" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "code"),
    [
        ("GET", "/image", json.dumps({"task_id": str(uuid.uuid4())}), 404, "task_not_found"),
        ("GET", "/image", json.dumps({"task_id": "../../etc/passwd"}), 404, "task_not_found"),
        ("GET", "/image", json.dumps({"task_id": "1' OR '1'='1"}), 404, "task_not_found"),
        ("GET", "/image", json.dumps({"task_id": 7}), 404, "task_not_found"),
        ("GET", "/image", json.dumps({"task_id": ["a"]}), 400, "invalid_task_id"),
        ("GET", "/image", "", 400, "missing_field"),
        ("GET", "/image", "{}", 400, "missing_field"),
        ("POST", "/image", "", 400, "empty_body"),
        ("POST", "/image", "{}", 400, "missing_field"),
        ("POST", "/image", "[]", 400, "invalid_json"),
        ("POST", "/image", "{not json", 400, "invalid_json"),
        ("POST", "/image", json.dumps({"image_data": "%%%"}), 400, "invalid_base64"),
        ("POST", "/image", json.dumps({"image_data": b64(b"plain text")}), 400, "invalid_image"),
        ("POST", "/image", json.dumps({"image_data": []}), 400, "invalid_field"),
        ("POST", "/image-sync", json.dumps({"image_data": 5}), 400, "invalid_field"),
        ("POST", "/image", json.dumps({"image_data": "A" * 300_000}), 413, "image_too_large"),
        ("POST", "/image", "x" * 400_000, 413, "request_too_large"),
        ("DELETE", "/image", "", 405, "method_not_allowed"),
        ("GET", "/nowhere", "", 404, "not_found"),
    ],
)
def test_bad_requests_get_a_json_error_with_a_code(
    client: FlaskClient, method: str, path: str, data: str, status: int, code: str
) -> None:
    response = client.open(path, method=method, data=data)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_a_body_over_the_limit_is_told_the_document_limit_in_bytes(client: FlaskClient) -> None:
    message = client.post("/image", data="x" * 400_000).get_json()["error"]["message"]
    assert re.search(r"a document may have \d+ bytes \(OCR_MAX_UPLOAD_BYTES\)", message), message


PDF_DOCUMENT = render_document([["One page"]])


@pytest.mark.parametrize(
    ("path", "v1"),
    [("/image-sync", "/v1/ocr"), ("/image-sync/", "/v1/ocr"), ("/image", "/v1/jobs")],
)
@pytest.mark.parametrize(
    ("kind", "send"),
    [
        ("a multipart upload", {"data": {"file": (HELLO_PNG, "page.png")}}),
        (
            "a multipart upload",
            {"data": {"image_data": b64(HELLO_PNG)}, "content_type": "multipart/form-data"},
        ),
        ("a raw PNG image", {"data": HELLO_PNG, "content_type": "image/png"}),
        # curl --data-binary @page.png sends it as a form, with no image type.
        ("a raw PNG image", {"data": HELLO_PNG}),
        ("a raw JPEG image", {"data": encode(render_page_image(HELLO), "JPEG")}),
        ("a PDF", {"data": PDF_DOCUMENT, "content_type": "application/pdf"}),
    ],
)
def test_a_file_sent_as_it_is_is_told_where_that_is_read(
    client: FlaskClient, path: str, v1: str, kind: str, send: dict[str, Any]
) -> None:
    if isinstance(send["data"], dict) and "file" in send["data"]:
        data, name = send["data"]["file"]
        send = {"data": {"file": (io.BytesIO(data), name)}}
    response = client.post(path, **send)
    assert response.status_code == 415, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_media_type"
    message = error["message"]
    assert kind in message and v1 in message, message
    assert '{"image_data": "<base64>"}' in message, message
    # Nothing was stored.
    assert client.get("/allimages").get_json() == {}


@pytest.mark.parametrize("path", ["/image-sync", "/image"])
def test_base64_as_a_form_field_is_a_400_that_shows_the_json_body(
    client: FlaskClient, path: str
) -> None:
    # curl -d image_data=...: a form, not JSON; still a malformed body, told what to send.
    response = client.post(path, data={"image_data": b64(HELLO_PNG)})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_json"
    assert "a form field" in error["message"] and '{"image_data": "<base64>"}' in error["message"]


def test_extra_keys_are_ignored(client: FlaskClient) -> None:
    data = json.dumps({"image_data": b64(HELLO_PNG), "lang": "eng", "whatever": [1, 2]})
    assert client.post("/image-sync", data=data).get_json() == {"text": "Hello OCR\n"}


def test_list_of_images_gives_a_list_of_task_ids(client: FlaskClient) -> None:
    data = json.dumps({"image_data": [b64(HELLO_PNG), b64(SECOND_PNG)]})
    ids = client.post("/image", data=data).get_json()["task_id"]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert list(client.get("/allimages/").get_json()) == ids


def test_healthz_and_readyz(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    seen_ocr_server(sessions)
    assert client.get("/readyz").get_json() == {"status": "ready", "ocr_servers_alive": 1}


def test_a_repeated_image_reuses_the_stored_result(client: FlaskClient, fake_ocr: FakeOcr) -> None:
    assert client.post("/image-sync", data=body()).get_json() == {"text": "Hello OCR\n"}
    assert client.post("/image-sync", data=body()).get_json() == {"text": "Hello OCR\n"}
    assert len(fake_ocr.documents) == 1
    # Different bytes are read.
    client.post("/image-sync", data=body(SECOND_PNG))
    assert len(fake_ocr.documents) == 2
    assert len(client.get("/allimages").get_json()) == 3


def test_a_list_of_known_and_new_images_is_answered_in_its_order(
    client: FlaskClient, fake_ocr: FakeOcr
) -> None:
    client.post("/image-sync", data=body())
    images = [b64(SECOND_PNG), b64(HELLO_PNG), b64(SECOND_PNG)]
    answer = client.post("/image-sync", data=json.dumps({"image_data": images})).get_json()
    assert answer == {"text": ["Second page\n", "Hello OCR\n", "Second page\n"]}
    # Only the two images not read before went to the OCR server.
    assert len(fake_ocr.documents) == 3


def test_reuse_can_be_switched_off(sessions: sessionmaker[Session], fake_ocr: FakeOcr) -> None:
    client = api_client(sessions, fake_ocr, reuse_results=False)
    client.post("/image-sync", data=body())
    client.post("/image-sync", data=body())
    assert len(fake_ocr.documents) == 2


def test_a_failed_result_is_not_reused(client: FlaskClient, fake_ocr: FakeOcr) -> None:
    unreadable = body(UNREADABLE_PNG)
    assert client.post("/image-sync", data=unreadable).status_code == 422
    assert client.post("/image-sync", data=unreadable).status_code == 422
    assert len(fake_ocr.documents) == 2


def test_allimages_lists_every_job_across_pages_in_order(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api_server import compat

    monkeypatch.setattr(compat, "LIST_PAGE", 2)
    ids = [client.post("/image", data=body()).get_json()["task_id"] for _ in range(5)]
    listed = client.get("/allimages").get_json()
    assert list(listed) == ids
    assert client.head("/allimages").status_code == 200
    # Nothing is left holding the database: a write goes through at once.
    assert client.post("/image", data=body()).status_code == 200
