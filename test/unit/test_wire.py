"""The wire contract: an error the OCR server answers is the same error again in the API."""

from __future__ import annotations

import pytest

from ocr_common.errors import (
    BadRequest,
    DocumentTooComplex,
    EngineTimeout,
    InvalidImage,
    OcrError,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from ocr_common.wire import RETRY_AFTER_S, error_body, error_from_wire, error_headers


@pytest.mark.parametrize(
    "sent",
    [
        BadRequest('"psm": 99 is not a mode', code="invalid_option", field="psm"),
        InvalidImage("page 2 could not be decoded"),
        PayloadTooLarge("page 1 is too large", code="too_many_pixels"),
        EngineTimeout("Tesseract gave up on page 3"),
        DocumentTooComplex("reading page 1 needed more memory"),
        Unavailable("every OCR engine is busy", code="ocr_busy", retry_after_s=2),
    ],
)
def test_an_error_crosses_the_wire_with_its_status_code_field_and_retry_after(
    sent: OcrError,
) -> None:
    got = error_from_wire(sent.status, error_body(sent), error_headers(sent).get("Retry-After"))
    assert (got.status, got.code, got.message, got.field, got.retry_after_s) == (
        sent.status,
        sent.code,
        sent.message,
        sent.field,
        sent.retry_after_s,
    )


def test_a_refusal_that_retrying_cannot_mend_is_not_a_retry() -> None:
    # A wrong internal token is the operator's to fix: retrying the same request cannot help,
    # so no 503 with Retry-After (clients would retry for ever) but a 500 naming it.
    sent = Unauthorized("missing or wrong X-Internal-Token")
    got = error_from_wire(sent.status, error_body(sent))
    assert (got.status, got.retry_after_s) == (500, None)
    assert "401" in got.message and "X-Internal-Token" in got.message


def test_the_ocr_server_s_own_trouble_is_a_retry() -> None:
    got = error_from_wire(502, "<html>bad gateway</html>")
    assert (got.status, got.code, got.retry_after_s) == (503, "ocr_unavailable", RETRY_AFTER_S)


def test_a_body_that_is_not_an_error_still_gives_an_error() -> None:
    got = error_from_wire(422, "<html>bad gateway</html>")
    assert (got.status, got.code) == (422, "ocr_error")
