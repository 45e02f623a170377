"""The original API on the wire, as real clients speak it, against the running services."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from ocr_testkit.pages import HELLO_PNG, assert_reads, b64, render_lines
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

HELLO_B64 = b64(HELLO_PNG)
SECOND_PNG = render_lines(["Second page of text", "Jumps over the lazy dog"])
SECOND_WORDS = ["Second", "page", "lazy", "dog"]
TIMEOUT_S = 120


def assert_error(response: requests.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def raw(
    stack: Stack, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A request with exactly these headers (http.client adds only Host and Content-Length)."""
    parts = urlsplit(stack.api_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def hello_task(stack: Stack) -> str:
    """A finished task of HELLO_PNG."""
    task_id = stack.submit(HELLO_B64)
    assert_reads(stack.result(task_id))
    return task_id


# -- the four routes ---------------------------------------------------------------------------


def test_image_sync(stack: Stack) -> None:
    response = requests.post(
        stack.url("/image-sync"), json={"image_data": HELLO_B64}, timeout=TIMEOUT_S
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert list(response.json()) == ["text"]
    assert_reads(response.json()["text"])


def test_post_image_then_get_image(stack: Stack) -> None:
    response = requests.post(stack.url("/image"), json={"image_data": HELLO_B64}, timeout=30)
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["task_id"]
    task_id = response.json()["task_id"]
    uuid.UUID(task_id)
    first = requests.get(stack.url("/image"), json={"task_id": task_id}, timeout=30)
    assert first.status_code == 200
    assert list(first.json()) == ["task_id"]
    assert first.json()["task_id"] is None or "Hello" in first.json()["task_id"]
    assert_reads(stack.result(task_id))


def test_allimages_lists_every_task(stack: Stack, hello_task: str) -> None:
    pending_or_done = stack.submit(HELLO_B64)
    response = requests.get(stack.url("/allimages"), timeout=30)
    assert response.status_code == 200
    listing = response.json()
    assert isinstance(listing, dict)
    assert_reads(listing[hello_task])
    assert pending_or_done in listing
    assert listing[pending_or_done] is None or "Hello" in listing[pending_or_done]
    for task_id, text in listing.items():
        uuid.UUID(task_id)
        assert text is None or isinstance(text, str)
    stack.result(pending_or_done)
    assert_reads(requests.get(stack.url("/allimages"), timeout=30).json()[pending_or_done])


# -- trailing slashes, content types, ids in the query ----------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/image-sync/"), ("POST", "/image/"), ("GET", "/image/"), ("GET", "/allimages/")],
)
def test_trailing_slash_is_served_without_redirect(
    stack: Stack, hello_task: str, method: str, path: str
) -> None:
    if method == "POST":
        body = {"image_data": HELLO_B64}
    elif path == "/image/":
        body = {"task_id": hello_task}
    else:
        body = None
    response = requests.request(
        method, stack.url(path), json=body, allow_redirects=False, timeout=TIMEOUT_S
    )
    assert response.status_code == 200, (response.status_code, response.text)
    answer = response.json()
    if path == "/image-sync/":
        assert_reads(answer["text"])
    elif path == "/image/" and method == "POST":
        uuid.UUID(answer["task_id"])
    elif path == "/image/":
        assert_reads(answer["task_id"])
    else:
        assert hello_task in answer


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json;"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json; charset=utf-8"},
    ],
    ids=["none", "form", "json-semicolon", "text", "json-charset"],
)
def test_json_body_whatever_the_content_type(
    stack: Stack, hello_task: str, headers: dict[str, str]
) -> None:
    body = json.dumps({"image_data": HELLO_B64}).encode()
    status, _, answer = raw(stack, "POST", "/image-sync", body, headers)
    assert status == 200, answer
    assert_reads(json.loads(answer)["text"])

    status, _, answer = raw(stack, "POST", "/image", body, headers)
    assert status == 200, answer
    uuid.UUID(json.loads(answer)["task_id"])

    body = json.dumps({"task_id": hello_task}).encode()
    status, _, answer = raw(stack, "GET", "/image", body, headers)
    assert status == 200, answer
    assert_reads(json.loads(answer)["task_id"])


def test_get_image_with_id_key_in_body(stack: Stack, hello_task: str) -> None:
    response = requests.get(stack.url("/image"), json={"id": hello_task}, timeout=30)
    assert response.status_code == 200, response.text
    assert_reads(response.json()["task_id"])


def test_accept_html_still_gets_json(stack: Stack, hello_task: str) -> None:
    headers = {"Accept": "text/html,application/xhtml+xml"}
    response = requests.get(
        stack.url("/image"), json={"task_id": hello_task}, headers=headers, timeout=30
    )
    assert response.headers["Content-Type"].startswith("application/json")
    assert_reads(response.json()["task_id"])
    missing = requests.get(
        stack.url("/image"), json={"task_id": str(uuid.uuid4())}, headers=headers, timeout=30
    )
    assert_error(missing, 404)


# -- lenient base64 and bodies -----------------------------------------------------------------


def wrapped(data: bytes) -> str:
    """Base64 in lines of 76 characters, as MIME encoders and `base64` write it."""
    return base64.encodebytes(data).decode("ascii")


@pytest.mark.parametrize(
    "image_data",
    [
        "data:image/png;base64," + HELLO_B64,
        wrapped(HELLO_PNG),  # json.dumps escapes the line breaks: \n in the JSON string
        wrapped(HELLO_PNG).replace("\n", "\r\n"),
        "  " + " ".join(HELLO_B64[i : i + 60] for i in range(0, len(HELLO_B64), 60)) + " \n",
        HELLO_B64.rstrip("="),
        base64.urlsafe_b64encode(HELLO_PNG).decode("ascii"),
    ],
    ids=["data-url", "escaped-newlines", "crlf", "stray-spaces", "no-padding", "urlsafe"],
)
def test_lenient_base64(stack: Stack, image_data: str) -> None:
    response = requests.post(
        stack.url("/image-sync"), json={"image_data": image_data}, timeout=TIMEOUT_S
    )
    assert response.status_code == 200, response.text
    assert_reads(response.json()["text"])
    task_id = requests.post(stack.url("/image"), json={"image_data": image_data}, timeout=30)
    assert task_id.status_code == 200, task_id.text
    assert_reads(stack.result(task_id.json()["task_id"]))


def test_raw_line_breaks_inside_the_json_string(stack: Stack) -> None:
    # Not valid strict JSON, but what a client that pastes base64 into a template sends.
    body = ('{"image_data": "' + wrapped(HELLO_PNG) + '"}').encode()
    assert b"\n" in body
    status, _, answer = raw(stack, "POST", "/image-sync", body)
    assert status == 200, answer
    assert_reads(json.loads(answer)["text"])
    status, _, answer = raw(stack, "POST", "/image", body)
    assert status == 200, answer
    assert_reads(stack.result(json.loads(answer)["task_id"]))


def test_extra_keys_are_ignored(stack: Stack, hello_task: str) -> None:
    body = {"image_data": HELLO_B64, "lang": "eng", "filename": "hello.png", "n": 1}
    response = requests.post(stack.url("/image-sync"), json=body, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["text"]
    response = requests.get(
        stack.url("/image"), json={"task_id": hello_task, "verbose": True}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["task_id"]


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("image_data", "/image-sync"),
        # What other clients of the original API send (issue 9).
        ("image_data_list", "/image-sync"),
        ("image_data_list", "/image-sync/"),
    ],
)
def test_a_list_of_images_gives_a_list_of_texts_in_order(stack: Stack, key: str, path: str) -> None:
    body = {key: [b64(SECOND_PNG), HELLO_B64]}
    response = requests.post(stack.url(path), json=body, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    texts = response.json()["text"]
    assert isinstance(texts, list) and len(texts) == 2
    assert_reads(texts[0], SECOND_WORDS)
    assert_reads(texts[1])
    assert "Hello" not in texts[0] and "Second" not in texts[1]


def test_a_list_of_ten_images_on_an_idle_server(stack: Stack) -> None:
    # One client, one request: the OCR server is idle, so it must not answer "busy".
    pages = [render_lines([f"Page {n} quick brown fox"], width=700) for n in range(10)]
    body = {"image_data": [b64(page) for page in pages]}
    response = requests.post(stack.url("/image-sync"), json=body, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    texts = response.json()["text"]
    assert len(texts) == 10
    for n, text in enumerate(texts):
        assert_reads(text, [f"Page {n}", "quick", "brown", "fox"])


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        ("image_data", {"Content-Type": "application/json"}),
        # image_data_list as a client that posts with no Content-Type sends it (issue 9).
        ("image_data_list", {}),
    ],
)
def test_a_list_of_images_gives_a_list_of_task_ids_in_order(
    stack: Stack, key: str, headers: dict[str, str]
) -> None:
    body = json.dumps({key: [HELLO_B64, b64(SECOND_PNG)]}).encode()
    status, _, answer = raw(stack, "POST", "/image", body, headers)
    assert status == 200, answer
    ids = json.loads(answer)["task_id"]
    assert isinstance(ids, list) and len(ids) == 2 and len(set(ids)) == 2
    assert_reads(stack.result(ids[0]))
    assert_reads(stack.result(ids[1]), SECOND_WORDS)


# -- errors ------------------------------------------------------------------------------------


def test_unknown_id_is_404(stack: Stack) -> None:
    task_id = str(uuid.uuid4())
    error = assert_error(
        requests.get(stack.url("/image"), json={"task_id": task_id}, timeout=30), 404
    )
    assert task_id in error["message"]
    assert_error(requests.get(stack.url(f"/image?task_id={task_id}"), timeout=30), 404)


@pytest.mark.parametrize("task_id", ["", "   ", ["a"], {"a": 1}, True])
def test_malformed_id_is_400(stack: Stack, task_id: object) -> None:
    # Missing or empty stays missing_field; a JSON type that cannot be an id stays a 400.
    response = requests.get(stack.url("/image"), json={"task_id": task_id}, timeout=30)
    error = assert_error(response, 400)
    expected = "missing_field" if isinstance(task_id, str) else "invalid_task_id"
    assert error["code"] == expected, error


# -- what other clients of the original API send (issue 9) ------------------------------------


@pytest.mark.parametrize(
    "task_id",
    ["unknown", "abc123", "00000", 12345, 4.5, "x" * 200, "../../etc/passwd", "' OR 1=1 --"],
)
def test_an_unknown_id_of_any_shape_is_404(stack: Stack, task_id: object) -> None:
    # Client suites check "unknown id -> 404" with made-up ids, in the body...
    response = requests.get(stack.url("/image"), json={"task_id": task_id}, timeout=30)
    error = assert_error(response, 404)
    assert error["code"] == "task_not_found"
    assert str(task_id)[:20] in error["message"]
    # ... and in the query string.
    response = requests.get(stack.url("/image"), params={"task_id": str(task_id)}, timeout=30)
    assert assert_error(response, 404)["code"] == "task_not_found"


def test_an_empty_id_in_the_query_is_400(stack: Stack) -> None:
    status, _, answer = raw(stack, "GET", "/image?task_id=")
    assert status == 400 and json.loads(answer)["error"]["code"] == "missing_field", answer


def test_with_both_keys_image_data_wins(stack: Stack) -> None:
    body = {"image_data": HELLO_B64, "image_data_list": [b64(SECOND_PNG), b64(SECOND_PNG)]}
    response = requests.post(stack.url("/image-sync"), json=body, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert_reads(response.json()["text"])


@pytest.mark.parametrize("key", ["image_data", "image_data_list"])
@pytest.mark.parametrize("path", ["/image", "/image-sync"])
def test_the_batch_limit_applies_to_both_keys(stack: Stack, key: str, path: str) -> None:
    # OCR_MAX_BATCH is 32 by default: 33 images are refused before any is read or stored.
    response = requests.post(stack.url(path), json={key: [HELLO_B64] * 33}, timeout=30)
    error = assert_error(response, 413)
    assert error["code"] == "batch_too_large"
    assert "32" in error["message"] and "OCR_MAX_BATCH" in error["message"]


@pytest.mark.parametrize("param", ["task_id", "id"])
def test_the_query_form_also_says_text(stack: Stack, hello_task: str, param: str) -> None:
    response = requests.get(stack.url(f"/image?{param}={hello_task}"), timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"task_id", "text"}
    assert answer["text"] == answer["task_id"]
    assert_reads(answer["text"])


def test_the_body_form_answers_exactly_task_id(stack: Stack, hello_task: str) -> None:
    text = stack.result(hello_task)
    response = requests.get(stack.url("/image"), json={"task_id": hello_task}, timeout=30)
    assert response.status_code == 200, response.text
    # Clients compare the dict for equality.
    assert response.json() == {"task_id": text}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/image-sync", {}),
        ("POST", "/image", {}),
        ("POST", "/image-sync", {"image": HELLO_B64}),
        ("POST", "/image", {"imagedata": HELLO_B64}),
        ("GET", "/image", {}),
        ("GET", "/image", {"taskid": "x"}),
        ("GET", "/image", None),
        ("POST", "/image-sync", None),
    ],
)
def test_missing_field_is_400(stack: Stack, method: str, path: str, body: object) -> None:
    response = requests.request(method, stack.url(path), json=body, timeout=30)
    assert_error(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"image_data=abc",
        b"[1, 2]",
        b'"just a string"',
        b"\xff\xfe\x00garbage",
        b"null",
    ],
)
@pytest.mark.parametrize("path", ["/image-sync", "/image"])
def test_invalid_json_is_400(stack: Stack, path: str, body: bytes) -> None:
    status, headers, answer = raw(stack, "POST", path, body)
    assert status == 400, answer
    assert json.loads(answer)["error"]["code"]


@pytest.mark.parametrize(
    "image_data",
    [
        b64(b"this is plain text, not an image at all"),
        b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),  # a PNG signature and nothing else
        b64(HELLO_PNG[: len(HELLO_PNG) // 2]),  # truncated
        b64(b"%PDF-1.4 not really"),
        "!!!not base64!!!",
        "é" * 20,
        "",
        "=",
        12345,
        None,
        {"nested": "object"},
        [],
    ],
)
@pytest.mark.parametrize("path", ["/image-sync", "/image"])
def test_undecodable_image_is_400(stack: Stack, path: str, image_data: object) -> None:
    response = requests.post(stack.url(path), json={"image_data": image_data}, timeout=30)
    assert_error(response, 400)


def test_one_bad_image_in_a_list_is_400_and_stores_nothing(stack: Stack) -> None:
    before = set(requests.get(stack.url("/allimages"), timeout=30).json())
    body = {"image_data": [HELLO_B64, b64(b"not an image")]}
    error = assert_error(requests.post(stack.url("/image"), json=body, timeout=30), 400)
    assert "[1]" in error["message"]
    after = set(requests.get(stack.url("/allimages"), timeout=30).json())
    assert after == before


def test_too_large_body_is_413(stack: Stack) -> None:
    # Larger than the default limit (10 MiB of image, 4/3 of that in base64) by a margin.
    image_data = "A" * (15 * 1024 * 1024)
    body = json.dumps({"image_data": image_data}).encode()
    for path in ("/image-sync", "/image"):
        try:
            response = requests.post(stack.url(path), data=body, timeout=TIMEOUT_S)
        except requests.ConnectionError as exc:
            pytest.fail(f"POST {path} of {len(body)} bytes: connection dropped, no 413: {exc}")
        assert_error(response, 413)


def test_too_large_image_inside_the_body_limit_is_413(stack: Stack) -> None:
    # Under the request limit (which leaves room for JSON around the base64), over the image one.
    image = b"\x89PNG\r\n\x1a\n" + bytes(10 * 1024 * 1024 + 20_000)
    response = requests.post(stack.url("/image"), json={"image_data": b64(image)}, timeout=60)
    assert_error(response, 413)


@pytest.mark.parametrize("path", ["/image-sync", "/image"])
def test_deeply_nested_json_is_400(stack: Stack, path: str) -> None:
    # json.loads raises RecursionError (not ValueError) on deep nesting.
    status, _, answer = raw(stack, "POST", path, b"[" * 5000 + b"]" * 5000)
    assert status == 400, answer[:300]
    status, _, answer = raw(
        stack, "GET", "/image", b'{"task_id": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    assert status == 400, answer[:300]


def test_never_a_500(stack: Stack) -> None:
    """A batch of odd requests: each gets an answer below 500."""
    odd: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("POST", "/image-sync", b'{"image_data": "' + b"A" * 1000 + b'"}', {}),
        ("POST", "/image", b'{"image_data": ["", ""]}', {}),
        ("POST", "/image", b'{"image_data": [' + b'"x",' * 50 + b'"x"]}', {}),
        ("GET", "/image", b'{"task_id": null}', {}),
        ("GET", "/image", b'{"task_id": "' + b"\\u0000" * 10 + b'"}', {}),
        ("GET", "/image?task_id=" + "a" * 3000, None, {}),
        ("GET", "/image?id=%00", None, {}),
        ("GET", "/image", b"\x00\x01\x02", {"Content-Type": "application/json"}),
        ("POST", "/image-sync", b"{}", {"Content-Type": "multipart/form-data"}),
        ("POST", "/image-sync", b"{}", {"Content-Type": "multipart/form-data; boundary=x"}),
        ("POST", "/image", b'{"image_data": "' + b64(HELLO_PNG).encode() + b'"', {}),
        ("POST", "/image", b'{"image_data": 1e999}', {}),
        ("POST", "/image", json.dumps({"image_data": "data:,"}).encode(), {}),
        ("GET", "/allimages?limit=-1", None, {}),
    ]
    for method, path, body, headers in odd:
        status, answer_headers, answer = raw(stack, method, path, body, headers)
        assert status < 500, (method, path, body and body[:80], status, answer[:300])
        assert status >= 400 or method == "GET", (method, path, status, answer[:300])
        assert answer_headers.get("Content-Type", "").startswith("application/json"), answer[:200]


# -- real clients: curl, chunked uploads -------------------------------------------------------


def curl(stack: Stack, *args: str) -> tuple[int, dict]:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("expect", [[], ["-H", "Expect: 100-continue"]], ids=["plain", "expect"])
def test_curl_d(stack: Stack, tmp_path: Path, expect: list[str]) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"image_data": HELLO_B64}))
    status, answer = curl(stack, *expect, "-d", f"@{body}", stack.url("/image-sync"))
    assert status == 200, answer
    assert_reads(answer["text"])
    status, answer = curl(stack, *expect, "-d", f"@{body}", stack.url("/image/"))
    assert status == 200, answer
    task_id = answer["task_id"]
    stack.result(task_id)
    query = json.dumps({"task_id": task_id})
    status, answer = curl(stack, "-X", "GET", "-d", query, stack.url("/image"))
    assert status == 200, answer
    assert_reads(answer["task_id"])


def test_chunked_upload(stack: Stack) -> None:
    body = json.dumps({"image_data": HELLO_B64}).encode()
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
    response = requests.post(stack.url("/image-sync"), data=chunks, timeout=TIMEOUT_S)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200, response.text
    assert_reads(response.json()["text"])
