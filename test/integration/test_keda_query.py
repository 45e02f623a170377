"""KEDA's trigger query (deploy/k8s/base/ocr-scaledobject.yaml) on a real MySQL/MariaDB: it
counts the pages waiting and being read, which is what the OCR Deployment scales on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.models import JobOutcome, JobRow
from ocr_common.options import OcrOptions

pytestmark = pytest.mark.mysql

SCALED_OBJECT = (
    Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "ocr-scaledobject.yaml"
)


@pytest.fixture
def database_url(mysql_url: str) -> str:
    """KEDA's MySQL scaler only ever asks MySQL: this module runs on it alone."""
    return mysql_url


def keda_query() -> str:
    [trigger] = yaml.safe_load(SCALED_OBJECT.read_text())["spec"]["triggers"]
    return str(trigger["metadata"]["query"])


def pending_pages(sessions: sessionmaker[Session]) -> object:
    with sessions() as session:
        return session.execute(text(keda_query())).scalar_one()


def test_the_trigger_counts_queued_and_running_pages(sessions: sessionmaker[Session]) -> None:
    # An empty queue is 0, not NULL: KEDA needs a number.
    assert pending_pages(sessions) == 0
    with sessions.begin() as session:
        images = [job_store.create_job(session, image=b"img", max_attempts=3).id for _ in range(3)]
        document = job_store.create_job(
            session, image=b"pdf", max_attempts=3, options=OcrOptions(), pages_total=10
        ).id
        job_store.create_job(
            session, image=b"pdf", max_attempts=3, options=OcrOptions(), pages_total=4
        )
    # 3 one-page jobs + a 10-page and a 4-page document, all queued.
    assert pending_pages(sessions) == 17
    with sessions.begin() as session:
        claimed = job_store.claim_batch(session, worker_id="w", lease_s=30, limit=4)
    assert {job.id for job in claimed} == {*images, document}
    with sessions.begin() as session:
        job_store.progress(session, job_id=document, worker_id="w", pages_done=6)
    # Running: 3 one-page jobs and the document with 4 pages left; queued: 4 pages.
    assert pending_pages(sessions) == 3 + 4 + 4
    with sessions.begin() as session:
        job_store.finish_batch(
            session, worker_id="w", outcomes=[JobOutcome(job_id, text="t") for job_id in images]
        )
        # A document on its last page still counts that page.
        session.execute(update(JobRow).where(JobRow.id == document).values(pages_done=10))
    assert pending_pages(sessions) == 1 + 4
