"""Thousands of small jobs from many concurrent clients: the database holds exactly what was
accepted. The OCR server is stopped during the run, so both cores serve intake."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.scenarios import load
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

JOBS = 2500
CLIENTS = 32


def test_a_burst_of_jobs_from_many_clients_is_stored_exactly_once(
    stack: Stack, fault_db: Engine
) -> None:
    tally = load(stack, fault_db, jobs=JOBS, clients=CLIENTS)
    print(tally)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (JOBS, JOBS, 0, 0)
    assert tally.seconds < 60
