"""Thousands of small jobs from many concurrent clients: the database holds exactly what was
accepted. The OCR server is stopped during the run, so both cores serve intake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.scenarios import load, running_stack
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]

JOBS = 2500
CLIENTS = 32


@pytest.fixture(scope="module")
def stack(fault_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(fault_db_url, tmp_path_factory.mktemp("logs")) as stack:
        yield stack


def test_a_burst_of_jobs_from_many_clients_is_stored_exactly_once(
    stack: Stack, fault_db: Engine
) -> None:
    tally = load(stack, fault_db, jobs=JOBS, clients=CLIENTS)
    print(tally)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (JOBS, JOBS, 0, 0)
    assert tally.seconds < 60
