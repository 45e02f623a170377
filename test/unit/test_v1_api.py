"""The v1 API through Flask's test client, with a fake OCR server and a real database."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fake_ocr import FakeOcr, api_client, fake_result
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api_server.schemas import Job, JobList, Problem
from ocr_common import job_store
from ocr_testkit.database import claim_next, finish, seen_ocr_server
from ocr_testkit.hostile_pdfs import broken_page_trees
from ocr_testkit.pages import HELLO_PNG, encode, render_document, render_page_image

PDF = render_document([["One"], ["Two"], ["Three"]], "PDF")
TIFF = render_document([["One"], ["Two"]], "TIFF")


@pytest.fixture
def fake_ocr() -> FakeOcr:
    return FakeOcr()


@pytest.fixture
def client(sessions: sessionmaker[Session], fake_ocr: FakeOcr) -> FlaskClient:
    limits = {"max_upload_bytes": 2_000_000, "max_pages": 5, "max_pixels": 20_000_000}
    # The fake OCR server's row, as a real one keeps it: it reads English.
    seen_ocr_server(sessions)
    return api_client(sessions, fake_ocr, **limits)


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    Problem.model_validate(body)
    assert body["code"] == code and body["status"] == status
    return dict(body)


def test_multipart_raw_and_base64_give_the_same_rich_result(client: FlaskClient) -> None:
    multipart = client.post("/v1/ocr", data={"file": (io.BytesIO(HELLO_PNG), "x.pdf"), "psm": "6"})
    raw = client.post("/v1/ocr?psm=6", data=HELLO_PNG, content_type="image/png")
    b64 = client.post("/v1/ocr", json={"document": base64.b64encode(HELLO_PNG).decode(), "psm": 6})
    for response in (multipart, raw, b64):
        assert response.status_code == 200, response.get_data(as_text=True)
        body = Job.model_validate(response.get_json()).model_dump()
        assert body["status"] == "succeeded" and body["kind"] == "sync"
        # The format comes from the bytes, not from the name "x.pdf".
        assert body["format"] == "PNG" and body["options"]["psm"] == 6
        assert body["pages"][0]["lines"][0]["words"][0]["bbox"]["left"] == 10
        assert "hocr" not in response.get_json()["pages"][0]


def test_a_raw_pdf_is_counted_and_its_pages_selected(
    client: FlaskClient, fake_ocr: FakeOcr
) -> None:
    response = client.post("/v1/ocr?pages=1,3", data=PDF, content_type="application/pdf")
    assert response.status_code == 200
    body = response.get_json()
    assert body["format"] == "PDF" and [p["page"] for p in body["pages"]] == [1, 3]
    assert body["progress"] == {"pages_done": 2, "pages_total": 2}
    assert body["text"] == "page1\n\fpage3\n"
    assert fake_ocr.documents[-1][1].pages == (1, 3)


@pytest.mark.parametrize(
    "query, field",
    [
        ("psm=0", "psm"),
        ("psm=x", "psm"),
        ("dpi=5", "dpi"),
        ("pages=3-1", "pages"),
        ("pages=9", "pages"),
        ("preprocess=magic", "preprocess"),
        ("lang=klingon", "lang"),
        ("format=docx", "format"),
        ("colour=red", "colour"),
    ],
)
def test_a_bad_option_is_a_400_naming_the_field(
    client: FlaskClient, query: str, field: str
) -> None:
    response = client.post(f"/v1/ocr?{query}", data=PDF, content_type="application/pdf")
    body = problem(response, 400, response.get_json(force=True)["code"])
    assert body["field"] == field and field in body["detail"]


def test_an_unknown_language_lists_the_installed_ones(client: FlaskClient) -> None:
    body = problem(
        client.post("/v1/ocr?lang=deu", data=HELLO_PNG, content_type="image/png"),
        400,
        "invalid_option",
    )
    assert "installed: eng" in body["detail"]


def test_too_many_pages_is_a_413_that_says_the_limit(client: FlaskClient) -> None:
    six = render_document([["x"]] * 6, "TIFF")
    body = problem(
        client.post("/v1/jobs", data=six, content_type="image/tiff"), 413, "too_many_pages"
    )
    assert "5" in body["detail"] and "OCR_MAX_PAGES" in body["detail"]
    assert client.post("/v1/jobs?pages=1-5", data=six, content_type="image/tiff").status_code == 202


def test_more_pages_than_a_sync_read_takes_is_a_413_that_points_to_the_job_queue(
    sessions: sessionmaker[Session], fake_ocr: FakeOcr
) -> None:
    client = api_client(sessions, fake_ocr, max_pages=5, sync_max_pages=2)
    body = problem(
        client.post("/v1/ocr", data=PDF, content_type="application/pdf"),
        413,
        "too_many_pages_to_wait_for",
    )
    assert "POST /v1/jobs" in body["detail"] and "OCR_SYNC_MAX_PAGES" in body["detail"]
    assert body["field"] == "pages"
    assert fake_ocr.documents == [] and client.get("/v1/jobs").get_json()["jobs"] == []
    # Two of its pages now, or all three queued.
    ok = client.post("/v1/ocr?pages=2-3", data=PDF, content_type="application/pdf")
    assert ok.status_code == 200
    queued = client.post("/v1/jobs", data=PDF, content_type="application/pdf")
    assert queued.status_code == 202
    # Once the queued job has its result, a read now of the same document is still refused: the
    # limit is the request's, whether its result would be read or reused.
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="w", lease_s=30)
        assert claimed is not None and claimed.id == queued.get_json()["id"]
        result = fake_result(claimed.pages)
        finish(session, job_id=claimed.id, worker_id="w", text=result.text, pages=result.pages)
    again = client.post("/v1/ocr", data=PDF, content_type="application/pdf")
    problem(again, 413, "too_many_pages_to_wait_for")


def test_formats_are_detected_from_bytes(client: FlaskClient) -> None:
    page = render_page_image(["Hello"])
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "WEBP"):
        response = client.post(
            "/v1/jobs", data=encode(page, fmt), content_type="application/octet-stream"
        )
        assert response.status_code == 202 and response.get_json()["format"] == fmt
    tiff = client.post("/v1/jobs", data=TIFF, content_type="image/png").get_json()
    assert tiff["format"] == "TIFF" and tiff["progress"]["pages_total"] == 2


def test_bad_bodies_are_problems(client: FlaskClient) -> None:
    for data, content_type, status, code in [
        (b"hello", "text/plain", 415, "unsupported_media_type"),
        (b"not an image", "image/png", 400, "invalid_image"),
        (b"%PDF-1.4 broken", "application/pdf", 400, "invalid_pdf"),
        ({"psm": "3"}, "multipart/form-data", 400, "missing_field"),
    ]:
        problem(client.post("/v1/ocr", data=data, content_type=content_type), status, code)
    problem(client.post("/v1/ocr", json={"document": "!!!"}), 400, "invalid_base64")
    assert "/openapi.json" in problem(client.get("/v1/nowhere"), 404, "not_found")["detail"]
    detail = problem(client.put("/v1/jobs"), 405, "method_not_allowed")["detail"]
    assert detail == "/v1/jobs takes GET or POST, not PUT"


@pytest.mark.parametrize("tree", broken_page_trees().items(), ids=lambda item: item[0])
@pytest.mark.parametrize("path", ["/v1/ocr", "/v1/jobs"])
def test_a_malformed_page_tree_is_a_400_invalid_pdf_and_nothing_is_stored(
    client: FlaskClient, fake_ocr: FakeOcr, tree: tuple[str, bytes], path: str
) -> None:
    _, data = tree
    body = problem(client.post(path, data=data, content_type="application/pdf"), 400, "invalid_pdf")
    assert "re-save it" in body["detail"]
    assert client.get("/v1/jobs").get_json()["jobs"] == [] and fake_ocr.documents == []


@pytest.mark.parametrize("path", ["/v1/ocr", "/v1/jobs"])
def test_an_empty_json_body_is_told_the_field_v1_reads(client: FlaskClient, path: str) -> None:
    response = client.post(path, data=b"", content_type="application/json")
    detail = problem(response, 400, "empty_body")["detail"]
    assert '{"document": "<base64>"}' in detail and "image_data" not in detail


# Python's names for what a JSON body holds; a message uses JSON's own (null, true, an array).
PYTHON_SPELLINGS = re.compile(r"\b(NoneType|True|False|inf|list|dict|int|float|str)\b")


@pytest.mark.parametrize("value", [None, True, False, 1e400, 1.5, [], {}, [True], [None], "x"])
@pytest.mark.parametrize(
    "field", ["psm", "dpi", "pages", "preprocess", "char_whitelist", "webhook_url", "document"]
)
def test_a_wrong_json_value_is_named_as_json_names_it(
    client: FlaskClient, field: str, value: object
) -> None:
    body: dict[str, object] = {"document": base64.b64encode(HELLO_PNG).decode(), field: value}
    response = client.post("/v1/jobs", json=body)
    if response.status_code < 400:
        # null and an empty array are the default; "x" is a character list.
        assert value is None or (field, value) in (("pages", []), ("char_whitelist", "x"))
        return
    detail = response.get_json()["detail"]
    assert response.status_code == 400 and not PYTHON_SPELLINGS.search(detail), detail


@pytest.mark.parametrize("value", [None, True, 1e400, [], {}])
def test_the_original_api_names_wrong_values_as_json_too(
    client: FlaskClient, value: object
) -> None:
    for path, body in (("/image-sync", {"image_data": value}), ("/image", {"task_id": value})):
        method = client.post if "image_data" in body else client.get
        response = method(path, data=json.dumps(body))
        message = response.get_json()["error"]["message"]
        # A number is a task id to old clients: one no task has (404).
        assert response.status_code in (400, 404), message
        assert not PYTHON_SPELLINGS.search(message), message


def test_the_original_api_keeps_its_error_shape(client: FlaskClient) -> None:
    response = client.post("/image-sync", data=b"")
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert response.get_json() == {
        "error": {"code": "empty_body", "message": response.get_json()["error"]["message"]}
    }


def test_an_unreadable_document_is_a_failed_job(client: FlaskClient) -> None:
    data = HELLO_PNG + b"unreadable"
    body = problem(client.post("/v1/ocr", data=data, content_type="image/png"), 422, "engine_error")
    assert "page 1" in body["detail"]
    [failed] = client.get("/v1/jobs?status=failed").get_json()["jobs"]
    assert failed["error"]["code"] == "engine_error"


def test_the_ocr_server_down_is_a_503_and_nothing_is_stored(
    client: FlaskClient, fake_ocr: FakeOcr
) -> None:
    fake_ocr.down = True
    response = client.post("/v1/ocr", data=HELLO_PNG, content_type="image/png")
    problem(response, 503, "ocr_unavailable")
    assert response.headers["Retry-After"]
    assert client.get("/v1/jobs").get_json()["jobs"] == []


def test_a_job_is_queued_then_read_in_every_format(
    client: FlaskClient, sessions: sessionmaker[Session], fake_ocr: FakeOcr
) -> None:
    response = client.post(
        "/v1/jobs?pages=2-3&preprocess=auto", data=PDF, content_type="application/pdf"
    )
    assert response.status_code == 202 and fake_ocr.notified == 1
    job = Job.model_validate(response.get_json())
    assert response.headers["Location"] == f"/v1/jobs/{job.id}"
    assert job.status == "queued" and job.progress is not None and job.progress.pages_total == 2
    assert job.options is not None and job.options.preprocess == "auto"
    problem(client.get(f"/v1/jobs/{job.id}?format=text"), 409, "result_not_ready")
    # What the OCR server would do: claim, read the pages, finish.
    with sessions.begin() as session:
        claimed = claim_next(session, worker_id="w", lease_s=30)
        assert claimed is not None and claimed.pages == (2, 3)
        job_store.progress(session, job_id=job.id, worker_id="w", pages_done=1)
    running = client.get(f"/v1/jobs/{job.id}").get_json()
    assert running["status"] == "running" and running["progress"] == {
        "pages_done": 1,
        "pages_total": 2,
    }
    result = fake_result(claimed.pages)
    with sessions.begin() as session:
        finish(session, job_id=job.id, worker_id="w", text=result.text, pages=result.pages)
    done = client.get(f"/v1/jobs/{job.id}")
    Job.model_validate(done.get_json())
    assert done.get_json()["text"] == "page2\n\fpage3\n"
    assert [p["page"] for p in done.get_json()["pages"]] == [2, 3]
    text = client.get(f"/v1/jobs/{job.id}?format=text")
    assert text.mimetype == "text/plain" and text.get_data(as_text=True) == "page2\n\fpage3\n"
    hocr = client.get(f"/v1/jobs/{job.id}?format=hocr")
    assert hocr.mimetype == "application/xhtml+xml"
    divs = ET.fromstring(hocr.get_data()).findall(".//{http://www.w3.org/1999/xhtml}div")
    assert [div.get("class") for div in divs].count("ocr_page") == 2
    tsv = client.get(f"/v1/jobs/{job.id}?format=tsv").get_data(as_text=True).splitlines()
    assert tsv[0].startswith("level\tpage_num")
    assert [row.split("\t")[11] for row in tsv if row.startswith("5\t")] == ["page2", "page3"]
    # The original API sees the same job.
    assert client.get("/image", json={"task_id": job.id}).get_json() == {
        "task_id": "page2\n\fpage3\n"
    }


def test_jobs_are_listed_newest_first_with_a_cursor_and_a_status_filter(
    client: FlaskClient,
) -> None:
    ids = [
        client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png").get_json()["id"]
        for _ in range(5)
    ]
    client.post("/v1/ocr", data=HELLO_PNG, content_type="image/png")
    first = client.get("/v1/jobs?limit=2&status=queued").get_json()
    JobList.model_validate(first)
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    second = client.get(f"/v1/jobs?limit=2&status=queued&cursor={first['next_cursor']}").get_json()
    third = client.get(f"/v1/jobs?limit=2&status=queued&cursor={second['next_cursor']}").get_json()
    assert [j["id"] for j in second["jobs"] + third["jobs"]] == ids[::-1][2:]
    assert third["next_cursor"] is None
    assert [j["status"] for j in client.get("/v1/jobs?status=succeeded").get_json()["jobs"]] == [
        "succeeded"
    ]
    assert len(client.get("/v1/jobs").get_json()["jobs"]) == 6
    problem(client.get("/v1/jobs?status=done"), 400, "invalid_option")
    problem(client.get("/v1/jobs?cursor=nonsense"), 400, "invalid_option")
    problem(client.get("/v1/jobs?limit=0"), 400, "invalid_option")


def test_delete_cancels_a_queued_job_and_deletes_a_finished_one(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    queued = client.post("/v1/jobs", data=HELLO_PNG, content_type="image/png").get_json()["id"]
    canceled = client.delete(f"/v1/jobs/{queued}")
    assert canceled.status_code == 200 and canceled.get_json()["status"] == "canceled"
    with sessions.begin() as session:
        assert claim_next(session, worker_id="w", lease_s=30) is None
    assert client.delete(f"/v1/jobs/{queued}").status_code == 204
    problem(client.get(f"/v1/jobs/{queued}"), 404, "job_not_found")
    finished = client.post("/v1/ocr", data=HELLO_PNG, content_type="image/png").get_json()["id"]
    assert client.delete(f"/v1/jobs/{finished}").status_code == 204
    problem(client.delete(f"/v1/jobs/{finished}"), 404, "job_not_found")
    problem(client.get("/v1/jobs/not-a-uuid"), 404, "job_not_found")


@pytest.mark.parametrize("kind", ["finished", "queued"])
def test_concurrent_deletes_of_one_job_are_answered_without_a_503(
    client: FlaskClient, kind: str
) -> None:
    # Three DELETEs of one job at once lock its rows in opposite orders on MySQL/MariaDB; the
    # database breaks the deadlock by rolling one back, which must be run again, not be a 503.
    path = "/v1/ocr" if kind == "finished" else "/v1/jobs"
    ids = [
        client.post(path, data=HELLO_PNG, content_type="image/png").get_json()["id"]
        for _ in range(15)
    ]
    for job_id in ids:
        start = threading.Barrier(3)

        def delete(job_id: str = job_id, start: threading.Barrier = start) -> int:
            start.wait()
            return client.delete(f"/v1/jobs/{job_id}").status_code

        with ThreadPoolExecutor(3) as pool:
            statuses = sorted(pool.map(lambda _n: delete(), range(3)))
        # A finished job is deleted once (204); a queued one is canceled once (200), then
        # the canceled job may be deleted too (204): never a 5xx.
        assert all(status in (200, 204, 404) for status in statuses), (job_id, statuses)
        assert statuses.count(200 if kind == "queued" else 204) == 1, (job_id, statuses)


def test_an_idempotency_key_returns_the_same_job_for_the_same_request(
    client: FlaskClient, fake_ocr: FakeOcr
) -> None:
    headers = {"Idempotency-Key": "order-17"}
    first = client.post("/v1/jobs?psm=6", data=HELLO_PNG, content_type="image/png", headers=headers)
    # The same document and options, sent another way, is the same request.
    again = client.post(
        "/v1/jobs",
        json={"document": base64.b64encode(HELLO_PNG).decode(), "psm": "6"},
        headers=headers,
    )
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fake_ocr.notified == 1
    other = client.post("/v1/jobs?psm=7", data=HELLO_PNG, content_type="image/png", headers=headers)
    assert problem(other, 409, "idempotency_key_reused")["field"] == "Idempotency-Key"
    fresh = client.post(
        "/v1/jobs?psm=7",
        data=HELLO_PNG,
        content_type="image/png",
        headers={"Idempotency-Key": "order-18"},
    )
    assert fresh.status_code == 202 and fresh.get_json()["id"] != first.get_json()["id"]


def test_openapi_lists_every_endpoint(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    paths = {(path, method) for path, methods in spec["paths"].items() for method in methods}
    assert {
        ("/v1/ocr", "post"),
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/image-sync", "post"),
        ("/image", "post"),
        ("/image", "get"),
        ("/allimages", "get"),
    } <= paths
    for name in ("Job", "Page", "Line", "Word", "BoundingBox", "Problem", "CompatError"):
        assert name in spec["components"]["schemas"]
    json.dumps(spec)


@pytest.mark.parametrize(
    "url",
    [
        "/v1/jobs?limit=%C2%B2",
        "/v1/jobs?limit=" + "9" * 5000,
    ],
)
def test_odd_digits_in_a_limit_are_a_400(client: FlaskClient, url: str) -> None:
    problem(client.get(url), 400, "invalid_option")


@pytest.mark.parametrize(
    "query", ["psm=%C2%B2", "dpi=" + "9" * 5000, "pages=%C2%B2", "pages=1-%C2%B2"]
)
def test_odd_digits_in_options_are_a_400(client: FlaskClient, query: str) -> None:
    response = client.post(f"/v1/jobs?{query}", data=HELLO_PNG, content_type="image/png")
    assert response.status_code == 400, response.get_data(as_text=True)


def test_idempotency_keys_differing_only_in_case_are_different_keys(client: FlaskClient) -> None:
    upper = client.post(
        "/v1/jobs", data=HELLO_PNG, content_type="image/png", headers={"Idempotency-Key": "Order-9"}
    )
    lower = client.post(
        "/v1/jobs", data=HELLO_PNG, content_type="image/png", headers={"Idempotency-Key": "order-9"}
    )
    assert upper.status_code == lower.status_code == 202
    assert upper.get_json()["id"] != lower.get_json()["id"]
