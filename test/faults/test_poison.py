"""A poison image (Tesseract times out on it every time) fails for good without blocking others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.scenarios import poison, running_stack
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]


@pytest.fixture(scope="module")
def stack(fault_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A long page takes about 2 s, a small one 10 ms: 0.3 s makes the long one poison.
    settings = {"OCR_PAGE_TIMEOUT_S": "0.3", "OCR_MAX_ATTEMPTS": "2"}
    with running_stack(fault_db_url, tmp_path_factory.mktemp("logs"), **settings) as stack:
        yield stack


def test_a_poison_image_fails_after_max_attempts_and_blocks_nothing(
    stack: Stack, fault_db: Engine
) -> None:
    tally = poison(stack, fault_db, small_jobs=8)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (9, 9, 0, 0)
    assert tally.failed == 1
    assert tally.notes["poison"] == ("failed", "engine_timeout", 2)
