"""Which API read a document now changes only what is shown: the same reuse rule, and the same
jobs recorded (a result or an engine failure; nothing for a read the OCR server refused)."""

from __future__ import annotations

import json
import socket

from fake_ocr import REFUSED, UNREADABLE, FakeOcr, api_client
from sqlalchemy.orm import Session, sessionmaker

from api_server.schemas import EXAMPLE_JOB_ID
from ocr_common.db import make_engine, make_session_factory
from ocr_testkit.pages import HELLO_PNG, b64


def original(image: bytes) -> str:
    return json.dumps({"image_data": b64(image)})


def test_a_refused_read_is_no_job_and_an_engine_failure_a_failed_one_on_both_apis(
    sessions: sessionmaker[Session],
) -> None:
    client = api_client(sessions, FakeOcr())
    refused, unreadable = HELLO_PNG + REFUSED, HELLO_PNG + UNREADABLE
    assert client.post("/image-sync", data=original(refused)).status_code == 400
    assert client.post("/v1/ocr", data=refused, content_type="image/png").status_code == 400
    assert client.get("/v1/jobs").get_json()["jobs"] == []
    assert client.post("/image-sync", data=original(unreadable)).status_code == 422
    assert client.post("/v1/ocr", data=unreadable, content_type="image/png").status_code == 422
    jobs = client.get("/v1/jobs").get_json()["jobs"]
    assert sorted((job["api"], job["status"]) for job in jobs) == [
        ("original", "failed"),
        ("v1", "failed"),
    ]


def test_both_apis_reuse_a_result_read_with_the_same_options(
    sessions: sessionmaker[Session],
) -> None:
    ocr = FakeOcr()
    client = api_client(sessions, ocr)
    for query in ("", "", "?psm=6", "?psm=6"):
        answer = client.post(f"/v1/ocr{query}", data=HELLO_PNG, content_type="image/png")
        assert answer.status_code == 200 and answer.get_json()["pages"][0]["lines"]
    assert len(ocr.documents) == 2  # read once with each set of options
    # The original API reads the first page with its own defaults: read once, then reused.
    for _ in range(2):
        assert client.post("/image-sync", data=original(HELLO_PNG)).status_code == 200
    assert len(ocr.documents) == 3
    assert len(client.get("/v1/jobs").get_json()["jobs"]) == 6


def test_a_list_of_images_to_image_sync_reads_at_most_the_synchronous_limit_in_all(
    sessions: sessionmaker[Session],
) -> None:
    # One request holds one synchronous read's place: a list of 32 images to /image-sync read
    # 32 pages at the engines' front, 3.2 times OCR_SYNC_MAX_PAGES (a security walkthrough).
    ocr = FakeOcr()
    client = api_client(sessions, ocr, sync_max_pages=3)
    images = [b64(HELLO_PNG)] * 3
    answer = client.post("/image-sync", data=json.dumps({"image_data": images}))
    assert answer.status_code == 200 and len(answer.get_json()["text"]) == 3
    read = len(ocr.documents)
    answer = client.post("/image-sync", data=json.dumps({"image_data": [*images, images[0]]}))
    assert answer.status_code == 413
    error = answer.get_json()["error"]
    assert error["code"] == "too_many_pages_to_wait_for"
    assert "4 images" in error["message"] and "POST /image" in error["message"]
    assert len(ocr.documents) == read  # nothing read
    # Queued, the same list is taken.
    assert (
        client.post("/image", data=json.dumps({"image_data": [*images, images[0]]})).status_code
        == 200
    )


def test_a_database_outage_tells_a_read_that_it_stored_nothing_only_when_it_could_have() -> None:
    # Nothing listens on the port: every request meets a database that is down.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    down = make_session_factory(make_engine(f"mysql+pymysql://u:p@127.0.0.1:{port}/ocr"))
    client = api_client(down, FakeOcr())
    read = client.get(f"/v1/jobs/{EXAMPLE_JOB_ID}")
    assert read.status_code == 503 and read.get_json()["code"] == "database_unavailable"
    assert "nothing was stored" not in read.get_json()["detail"]
    deleted = client.delete(f"/v1/jobs/{EXAMPLE_JOB_ID}")
    assert deleted.status_code == 503 and "nothing was deleted" in deleted.get_json()["detail"]
    write = client.post("/image", data=original(HELLO_PNG))
    assert write.status_code == 503 and write.get_json()["error"]["code"] == "database_unavailable"
    assert "nothing was stored" in write.get_json()["error"]["message"]
