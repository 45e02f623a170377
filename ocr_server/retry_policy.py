"""How an attempt at a job ends: finished, retried on a fresh engine, or failed for good; a
pure function of the job and the attempt's error, tested on its own."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ocr_common.errors import EngineError, OcrError
from ocr_common.models import ClaimedJob


class Verdict(enum.Enum):
    FINISH = "finish"  # write the result
    RETRY = "retry"  # back to the queue: another attempt, on a fresh engine, may succeed
    FAIL = "fail"  # failed for good, with the error


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    # What the job records as its error (FAIL) or its last attempt's error (RETRY).
    error: OcrError | None = None
    message: str | None = None


def decide(job: ClaimedJob, error: OcrError | None) -> Decision:
    """What to do with ``job`` now that an attempt at it ended with ``error`` (None: it read)."""
    if error is None:
        return Decision(Verdict.FINISH)
    retryable = isinstance(error, EngineError) and error.retryable
    if retryable and job.attempts < job.max_attempts:
        return Decision(Verdict.RETRY, error, error.message)
    message = error.message
    if retryable:
        message += f" (gave up after {job.attempts} attempts)"
    return Decision(Verdict.FAIL, error, message)
