"""Hostile clients against the real services: slow senders, a stalled OCR server, costly images."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.hostile_clients import (
    batch_flood,
    blank_png_uploads,
    browser_tricks,
    long_options,
    made_up_methods,
    many_scan_jpegs,
    slow_clients,
    stalled_ocr_server,
)
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

# The API's processes together before any of this: master and two workers (about 300 MB); one
# decoded 50-megapixel RGBA page alone is 200 MB.
API_RSS_BOUND_MB = 600


def test_200_slow_clients_leave_healthz_and_post_image_answering(
    stack: Stack, fault_db: Engine
) -> None:
    tally = slow_clients(stack, fault_db, connections=200, seconds=10)
    assert tally.problems == []
    assert tally.tried >= 10 and tally.as_expected == tally.tried
    assert tally.others_kept_finishing


def test_a_stopped_ocr_server_leaves_post_image_answering(stack: Stack, fault_db: Engine) -> None:
    tally = stalled_ocr_server(stack, fault_db, waiting=20)
    assert tally.problems == []
    # Half the threads of each API process may wait; the other requests were told at once.
    assert tally.notes["/image-sync answered 503 ocr_busy at once"] >= 20 - 2 * 4
    assert tally.others_kept_finishing


def test_jpegs_with_thousands_of_scans_are_refused_from_their_markers(
    stack: Stack, fault_db: Engine
) -> None:
    tally = many_scan_jpegs(stack, fault_db, uploads=8)
    assert tally.problems == []
    assert tally.tried > 8 and tally.as_expected == tally.tried
    assert tally.others_kept_finishing


def test_blank_fifty_megapixel_pngs_are_accepted_without_decoding_them(
    stack: Stack, fault_db: Engine
) -> None:
    tally = blank_png_uploads(stack, fault_db, uploads=16)
    assert tally.problems == []
    assert tally.tried > 16 and tally.as_expected == tally.tried
    assert tally.api_peak_rss_mb is not None and tally.api_peak_rss_mb < API_RSS_BOUND_MB
    assert tally.others_kept_finishing


def test_a_flood_of_long_lists_is_refused_whole_and_stores_nothing(
    stack: Stack, fault_db: Engine
) -> None:
    tally = batch_flood(stack, fault_db, clients=8, images=1000, batch=32)
    assert tally.problems == []
    assert tally.notes["jobs stored by the refused lists"] == 0
    assert tally.tried > 24 and tally.as_expected == tally.tried
    assert tally.others_kept_finishing


def test_options_at_and_past_their_bounds(stack: Stack, fault_db: Engine) -> None:
    tally = long_options(stack, fault_db)
    assert tally.problems == []
    assert tally.tried >= 8 and tally.as_expected == tally.tried
    assert tally.others_kept_finishing


def test_made_up_methods_and_paths_leave_metrics_bounded(stack: Stack, fault_db: Engine) -> None:
    tally = made_up_methods(stack, fault_db, requests_count=3000)
    assert tally.problems == []
    assert tally.tried >= 3000 and tally.as_expected == tally.tried
    assert tally.api_peak_rss_mb is not None and tally.api_peak_rss_mb < API_RSS_BOUND_MB
    assert tally.others_kept_finishing


def test_a_web_page_can_neither_read_nor_queue_through_the_browser(
    stack: Stack, fault_db: Engine
) -> None:
    tally = browser_tricks(stack, fault_db)
    assert tally.problems == []
    assert tally.notes["jobs stored by cross-site requests"] == 0
    assert tally.tried > 20 and tally.as_expected == tally.tried
    assert tally.others_kept_finishing
