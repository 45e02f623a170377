"""Hostile and everyday documents against real processes (cases in hostile_documents.py)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.hostile_documents import blank_pages, pdf_bomb, wide_image
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

# A lower ceiling than the default, so that the bomb fails in seconds rather than tens of them.
STACK_SETTINGS = {
    "OCR_ENGINE_MAX_MEMORY_MB": "512",
    "OCR_ENGINE_MAX_RSS_MB": "384",
    "OCR_MAX_ATTEMPTS": "2",
}


def test_a_pdf_bomb_fails_as_too_complex_while_other_jobs_and_metrics_carry_on(
    stack: Stack, fault_db: Engine
) -> None:
    tally = pdf_bomb(stack, fault_db)
    assert tally.problems == []
    assert tally.others_kept_finishing is True
    # Over the memory ceiling once is enough: it would be on every engine.
    assert tally.notes["bomb"] == ("failed", "document_too_complex", 1)
    # No engine grew past its ceiling (it was 160 GB without one).
    assert tally.engine_peak_rss_mb is not None and tally.engine_peak_rss_mb < 512


def test_blank_pages_are_empty_text_on_every_endpoint(stack: Stack, fault_db: Engine) -> None:
    tally = blank_pages(stack, fault_db)
    assert tally.problems == []
    assert tally.tried == tally.as_expected == 7
    assert tally.others_kept_finishing is True


def test_an_image_wider_or_taller_than_tesseract_reads_is_refused_at_upload(
    stack: Stack, fault_db: Engine
) -> None:
    tally = wide_image(stack, fault_db)
    assert tally.problems == []
    assert tally.tried == tally.as_expected == 9
    assert tally.others_kept_finishing is True
