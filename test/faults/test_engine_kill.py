"""SIGKILL of one engine process in the middle of a batch: nothing lost, a new engine comes up."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from ocr_testkit.scenarios import sigkill_engine
from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e, pytest.mark.faults]


def test_sigkill_of_an_engine_mid_batch_loses_no_job(stack: Stack, fault_db: Engine) -> None:
    tally = sigkill_engine(stack, fault_db, jobs=16)
    assert tally.problems == []
    assert (tally.submitted, tally.accepted, tally.lost, tally.duplicated) == (16, 16, 0, 0)
    # One crash costs one attempt of three: every job still succeeds.
    assert tally.failed == 0
    assert tally.notes["new_pid"] != tally.notes["killed_pid"]
