"""A poison image (Tesseract times out on it every time) fails for good without blocking others."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.scenarios import poison
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

# A long page takes about 2 s, a small one 10 ms: 0.3 s makes the long one poison.
STACK_SETTINGS = {"OCR_PAGE_TIMEOUT_S": "0.3", "OCR_MAX_ATTEMPTS": "2"}


def test_a_poison_image_fails_after_max_attempts_and_blocks_nothing(
    stack: Stack, fault_db: Engine
) -> None:
    tally = poison(stack, fault_db, small_jobs=8)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (9, 9, 0, 0)
    assert tally.failed == 1
    assert tally.notes["poison"] == ("failed", "engine_timeout", 2)
