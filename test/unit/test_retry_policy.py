"""The retry policy: a pure decision on (job, how its attempt ended)."""

from __future__ import annotations

import pytest

from ocr_common.errors import (
    DocumentTooComplex,
    EngineCrashed,
    EngineError,
    EngineTimeout,
    InvalidImage,
    OcrError,
)
from ocr_common.models import ClaimedJob
from ocr_server.retry_policy import Verdict, decide


def job(attempts: int, max_attempts: int = 3) -> ClaimedJob:
    return ClaimedJob(id="j", attempts=attempts, max_attempts=max_attempts, image=b"")


def test_a_read_page_is_finished_whatever_the_attempt() -> None:
    assert decide(job(1), None).verdict is Verdict.FINISH
    assert decide(job(3), None).verdict is Verdict.FINISH


@pytest.mark.parametrize("error", [EngineCrashed("crashed"), EngineTimeout("too slow")])
def test_a_retryable_failure_is_retried_until_the_last_attempt(error: OcrError) -> None:
    first, second, last = (decide(job(n), error) for n in (1, 2, 3))
    assert first.verdict is second.verdict is Verdict.RETRY
    assert first.error is error and first.message == error.message
    assert last.verdict is Verdict.FAIL
    assert last.message == f"{error.message} (gave up after 3 attempts)"


@pytest.mark.parametrize(
    "error",
    [
        EngineError("Tesseract refused page 1", code="recognition_failed"),
        InvalidImage("page 1 could not be decoded"),
        EngineError("the result is larger than the database takes", code="result_too_large"),
        # Over the engines' memory ceiling: the same page is as large on the next engine.
        DocumentTooComplex("reading page 1 needed more memory than an engine may use"),
    ],
)
def test_a_failure_that_would_fail_again_fails_at_once(error: OcrError) -> None:
    decision = decide(job(1), error)
    assert decision.verdict is Verdict.FAIL
    assert (decision.error, decision.message) == (error, error.message)
