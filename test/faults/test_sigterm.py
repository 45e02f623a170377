"""SIGTERM to either service: it stops taking work, finishes within the grace, exits 0."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.scenarios import (
    sigterm_api,
    sigterm_ocr_server_long_grace,
    sigterm_ocr_server_short_grace,
)
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]


@pytest.fixture
def grace(stack: Stack, request: pytest.FixtureRequest) -> Iterator[float]:
    """Restart the OCR server with the OCR_SHUTDOWN_GRACE_S of the test's parameter."""
    old = stack.env["OCR_SHUTDOWN_GRACE_S"]
    stack.ocr.stop()
    stack.env["OCR_SHUTDOWN_GRACE_S"] = str(request.param)
    stack.start_ocr()
    yield float(request.param)
    stack.ocr.stop()
    stack.env["OCR_SHUTDOWN_GRACE_S"] = old
    stack.start_ocr()


@pytest.mark.parametrize("grace", [1], indirect=True)
def test_sigterm_gives_back_pages_longer_than_the_grace_and_exits_on_time(
    stack: Stack, fault_db: Engine, grace: float
) -> None:
    tally = sigterm_ocr_server_short_grace(stack, fault_db)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (2, 2, 0, 0)
    assert tally.notes["exit"][0] == 0


@pytest.mark.parametrize("grace", [30], indirect=True)
def test_sigterm_finishes_a_page_within_the_grace(
    stack: Stack, fault_db: Engine, grace: float
) -> None:
    tally = sigterm_ocr_server_long_grace(stack, fault_db)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (1, 1, 0, 0)


def test_sigterm_to_the_api_completes_requests_in_flight(stack: Stack, fault_db: Engine) -> None:
    tally = sigterm_api(stack, fault_db, in_flight=4)
    assert tally.problems == []
    assert tally.lost == 0 and tally.duplicated == 0
    assert tally.notes["exit"][0] == 0
