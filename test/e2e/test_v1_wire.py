"""The v1 API on the wire: real ocr-api and ocr-server processes, real Tesseract, MySQL."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests

from ocr_testkit.pages import HELLO, HELLO_PNG, ORIENTATION_LINES, render_document
from ocr_testkit.stack import JOB_TIMEOUT_S, Stack
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

PAGES = [[f"Page {n} says hello", *ORIENTATION_LINES[:2]] for n in (1, 2, 3)]


def ended(stack: Stack, location: str) -> dict[str, Any]:
    """The v1 job at ``location`` once it has succeeded or failed."""

    def final() -> dict[str, Any] | None:
        body = requests.get(stack.url(location), timeout=30).json()
        return body if body["status"] in ("succeeded", "failed") else None

    return dict(wait_until(final, JOB_TIMEOUT_S, f"the job at {location}", interval_s=0.2))


def test_a_multipart_pdf_job_is_read_page_by_page(stack: Stack) -> None:
    pdf = render_document(PAGES, "PDF")
    response = requests.post(
        stack.url("/v1/jobs"),
        files={"file": ("scan.bin", pdf)},
        data={"dpi": "200", "pages": "1-3"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    job = ended(stack, location)
    assert job["status"] == "succeeded", job
    assert job["format"] == "PDF" and job["progress"] == {"pages_done": 3, "pages_total": 3}
    assert [page["lines"][0]["text"] for page in job["pages"]] == [p[0] for p in PAGES]
    assert job["pages"][0]["width"] == 1800  # 900 px at 100 dpi, rendered at 200
    hocr = requests.get(stack.url(location), params={"format": "hocr"}, timeout=30)
    assert hocr.headers["Content-Type"].startswith("application/xhtml+xml")
    assert hocr.text.count("class='ocr_page'") == 3
    listed = requests.get(stack.url("/v1/jobs"), params={"status": "succeeded"}, timeout=30)
    assert job["id"] in [j["id"] for j in listed.json()["jobs"]]


def test_raw_and_base64_documents_are_read_now(stack: Stack) -> None:
    raw = requests.post(
        stack.url("/v1/ocr"), data=HELLO_PNG, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert raw.status_code == 200, raw.text
    words = [w["text"] for line in raw.json()["pages"][0]["lines"] for w in line["words"]]
    assert words == " ".join(HELLO).split()
    b64 = requests.post(
        stack.url("/v1/ocr"),
        params={"format": "text"},
        json={"document": base64.b64encode(HELLO_PNG).decode(), "psm": 6},
        timeout=60,
    )
    assert b64.status_code == 200 and b64.text.split() == " ".join(HELLO).split()
    bad = requests.post(
        stack.url("/v1/ocr?lang=xyz"),
        data=HELLO_PNG,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert bad.status_code == 400
    assert bad.headers["Content-Type"] == "application/problem+json"
    assert bad.json()["field"] == "lang"


def test_the_contract_and_the_docs_are_served(stack: Stack) -> None:
    spec = requests.get(stack.url("/openapi.json"), timeout=30).json()
    assert "/v1/jobs/{job_id}" in spec["paths"] and "/image-sync" in spec["paths"]
    assert "/openapi.json" in requests.get(stack.url("/docs"), timeout=30).text
    # The documented example request reads as the documented example answer says.
    operation = spec["paths"]["/v1/ocr"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    answer = requests.post(stack.url("/v1/ocr"), json=example, timeout=60)
    assert answer.status_code == 200, answer.text
    documented = operation["responses"]["200"]["content"]["application/json"]["example"]
    assert answer.json()["text"] == documented["text"] == "Hello OCR\n"
    words = [w["text"] for w in answer.json()["pages"][0]["lines"][0]["words"]]
    assert words == ["Hello", "OCR"]


# -- options are bounded and travel in the body (issue 8) -------------------------------------

# 1,000 CJK characters: 9,000 bytes once percent-encoded, more than a request line may hold.
CJK_WHITELIST = "".join(chr(0x4E00 + n) for n in range(1000))


@pytest.mark.parametrize("endpoint", ["/v1/ocr", "/v1/jobs"])
def test_a_long_cjk_whitelist_is_read_not_retried(stack: Stack, endpoint: str) -> None:
    # Valid (1,000 characters is the limit): the OCR server gets it in the JSON body of the
    # internal call; in its query string it made the request line too long, and the client
    # was told 503 "retry" for ever.
    response = requests.post(
        stack.url(endpoint),
        json={"document": base64.b64encode(HELLO_PNG).decode(), "char_whitelist": CJK_WHITELIST},
        timeout=60,
    )
    assert response.status_code in (200, 202), response.text
    job = response.json()
    if response.status_code == 202:
        job = ended(stack, f"/v1/jobs/{job['id']}")
    assert job["status"] == "succeeded", job
    assert job["options"]["char_whitelist"] == CJK_WHITELIST
    # Only CJK characters may be read, and the page has none: no Latin letter comes out.
    assert not any("a" <= ch.lower() <= "z" for ch in str(job["text"])), job["text"]


@pytest.mark.parametrize(
    ("lang", "says"),
    [
        ("+".join(["eng"] * 20_000), "characters"),
        ("+".join(["eng"] * 9), "names 9 languages"),
        ("eng+eng", "more than once"),
        ("eng+xyz", "not installed"),
    ],
)
@pytest.mark.parametrize("endpoint", ["/v1/ocr", "/v1/jobs"])
def test_lang_is_bounded(stack: Stack, endpoint: str, lang: str, says: str) -> None:
    # A 20,000-part lang was a 500 on MySQL (too long for its column); now a 400 naming it.
    response = requests.post(
        stack.url(endpoint),
        json={"document": base64.b64encode(HELLO_PNG).decode(), "lang": lang},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["code"] == "invalid_option" and problem["field"] == "lang"
    assert says in problem["detail"], problem


def test_an_over_long_whitelist_or_page_list_is_a_400(stack: Stack) -> None:
    document = base64.b64encode(HELLO_PNG).decode()
    for field, value in (("char_whitelist", "a" * 1001), ("pages", "1," * 3000)):
        response = requests.post(
            stack.url("/v1/jobs"), json={"document": document, field: value}, timeout=30
        )
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field
