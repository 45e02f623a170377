"""Bad input on the wire: each gets a 4xx JSON error with a stable code, and the service stays up.

Also the unusual images that must work: 16-bit PNG, CMYK JPEG and TIFF, an animated GIF (the
cases are in ocr_testkit/bad_inputs.py).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from PIL import Image
from sqlalchemy.engine import Engine

from ocr_testkit.bad_inputs import (
    GOOD_IMAGES,
    BadInput,
    bad_inputs,
    healthy,
    limit_bytes,
    over_limit_chunked,
    over_limit_with_length,
    read_good_image,
    send,
)
from ocr_testkit.pages import assert_reads
from ocr_testkit.scenarios import status_counts
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]


@pytest.fixture
def stores_nothing(stack: Stack, db_engine_e2e: Engine) -> Iterator[None]:
    """Nothing malformed is ever stored."""
    before = status_counts(db_engine_e2e)
    yield
    assert status_counts(db_engine_e2e) == before


@pytest.mark.parametrize("case", bad_inputs(), ids=lambda case: case.name)
def test_bad_input_gets_a_4xx_json_error_with_a_stable_code(
    stack: Stack, stores_nothing: None, case: BadInput
) -> None:
    outcome = send(stack.api_url, case)
    assert (outcome.status, outcome.code) == (case.status, case.code), outcome.detail
    assert outcome.json_ok, outcome.detail
    assert outcome.elapsed_s < 5, f"took {outcome.elapsed_s:.1f} s"
    assert healthy(stack.api_url)


@pytest.mark.parametrize("send_over", [over_limit_with_length, over_limit_chunked])
def test_a_body_over_the_limit_is_a_413_read_no_further(
    stack: Stack, stores_nothing: None, send_over: Callable[[str], tuple[int, dict[str, Any], int]]
) -> None:
    started = time.monotonic()
    status, body, sent = send_over(stack.api_url)
    assert (status, body.get("error", {}).get("code")) == (413, "request_too_large"), body
    assert "OCR_MAX_UPLOAD_BYTES" in body["error"]["message"]
    # Refused by its size: far less than the whole body went out (the kernel buffers some).
    assert sent < limit_bytes() * 2, f"sent {sent} bytes before the answer"
    assert time.monotonic() - started < 10
    assert healthy(stack.api_url)


@pytest.mark.parametrize("name", list(GOOD_IMAGES))
def test_unusual_but_valid_images_are_read(stack: Stack, name: str) -> None:
    data = GOOD_IMAGES[name]()
    with Image.open(io.BytesIO(data)) as image:
        # The case is what it says it is.
        if name == "animated GIF":
            assert image.format == "GIF" and image.n_frames == 2
        else:
            assert image.mode == ("I;16" if name == "16-bit PNG" else "CMYK")
    status, body = read_good_image(stack.api_url, data)
    assert status == 200, body
    assert_reads(body["text"])
    assert "Second" not in body["text"]


@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"params": {"task_id": "a" * 5000}}, id="request line over 4094 bytes"),
        pytest.param({"headers": {"X-Long": "b" * 9000}}, id="header over 8190 bytes"),
    ],
)
def test_requests_over_the_http_servers_limits_get_a_json_error(
    stack: Stack, request_kwargs: dict[str, Any]
) -> None:
    response = requests.get(stack.url("/image"), timeout=10, **request_kwargs)
    assert 400 <= response.status_code < 500
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[
        :300
    ]
    assert response.json()["error"]["code"]
    assert healthy(stack.api_url)
