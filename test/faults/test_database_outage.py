"""The database goes away for 10 s and comes back: 503s meanwhile, then both services recover.

The database is a private MariaDB server of this test session, never the shared one.
"""

from __future__ import annotations

import signal
from unittest.mock import ANY

import pytest
import requests
from sqlalchemy.engine import Engine

from ocr_testkit.mariadb_server import PrivateMariaDB
from ocr_testkit.scenarios import database_outage
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]


def test_a_database_outage_answers_503_and_loses_no_accepted_job(
    stack: Stack, fault_db: Engine, private_mariadb: PrivateMariaDB
) -> None:
    try:
        tally = database_outage(
            stack,
            fault_db,
            stop_db=lambda: private_mariadb.stop(signal.SIGTERM),
            start_db=private_mariadb.start,
            outage_s=10,
        )
    finally:
        if not private_mariadb.running:
            private_mariadb.start()
    print(tally)
    assert tally.problems == []
    assert tally.lost == 0 and tally.duplicated == 0
    assert tally.notes["refused_during_outage"] > 0
    # Both services are still the processes that started: they reconnected by themselves.
    assert stack.api.proc is not None and stack.api.proc.poll() is None
    assert stack.ocr.proc is not None and stack.ocr.proc.poll() is None


def test_allimages_during_a_database_outage_is_a_503_not_a_broken_200(
    stack: Stack, private_mariadb: PrivateMariaDB
) -> None:
    private_mariadb.stop(signal.SIGTERM)
    try:
        response = requests.get(stack.url("/allimages"), timeout=10, stream=True)
        status, retry_after = response.status_code, response.headers.get("Retry-After")
        try:
            body = response.json()
        except requests.RequestException as exc:  # the stream broke after a 200 header
            body = f"broken body: {type(exc).__name__}"
    finally:
        private_mariadb.start()
    assert (status, body) == (503, {"error": {"code": "database_unavailable", "message": ANY}})
    assert retry_after is not None and int(retry_after) > 0
