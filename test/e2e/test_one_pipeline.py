"""The original API's jobs go the v1 way (issue 10): real processes, real Tesseract, MySQL."""

from __future__ import annotations

import io

import pytest
import requests

from ocr_testkit.pages import HELLO, b64, render_page_image
from ocr_testkit.stack import JOB_TIMEOUT_S, Stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]


def test_an_original_api_job_shows_its_boxes_through_v1(stack: Stack) -> None:
    image = render_page_image(HELLO)
    png = io.BytesIO()
    image.save(png, "PNG")
    task = requests.post(stack.url("/image"), json={"image_data": b64(png.getvalue())}, timeout=30)
    task_id = task.json()["task_id"]

    def text() -> str | None:
        return requests.get(stack.url("/image"), params={"task_id": task_id}, timeout=30).json()[
            "task_id"
        ]

    assert wait_until(text, JOB_TIMEOUT_S, "the task").split() == " ".join(HELLO).split()
    job = requests.get(stack.url(f"/v1/jobs/{task_id}"), timeout=30).json()
    assert (job["api"], job["kind"], job["format"]) == ("original", "async", "PNG")
    assert job["progress"] == {"pages_done": 1, "pages_total": 1}
    (page,) = job["pages"]
    assert (page["page"], page["width"], page["height"]) == (1, *image.size)
    assert [line["text"] for line in page["lines"]] == HELLO
    first = page["lines"][0]["words"][0]
    assert first["text"] == "Hello" and first["confidence"] > 50
    assert 0 <= first["bbox"]["left"] < first["bbox"]["left"] + first["bbox"]["width"] < 300
    tsv = requests.get(stack.url(f"/v1/jobs/{task_id}"), params={"format": "tsv"}, timeout=30)
    assert tsv.status_code == 200 and "\tHello" in tsv.text


def test_a_phone_photo_saved_as_mpo_is_read_by_the_original_api(stack: Stack) -> None:
    # Phones save a JPEG with a second picture in it (MPO): /v1 read it, /image refused it.
    image = render_page_image(HELLO).convert("RGB")
    mpo = io.BytesIO()
    image.save(mpo, "MPO", save_all=True, append_images=[image.resize((90, 60))], quality=95)
    body = {"image_data": b64(mpo.getvalue())}
    answer = requests.post(stack.url("/image-sync"), json=body, timeout=JOB_TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"].split() == " ".join(HELLO).split()
