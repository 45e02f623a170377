"""The queue's hot queries on a real MySQL/MariaDB: KEDA's trigger query
(deploy/k8s/base/ocr-scaledobject.yaml) counts the pages waiting and being read, which is what
the OCR Deployment scales on; it and the claim stay on the (status, created_at) index however
many finished jobs the table holds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import JobFiles
from ocr_common.models import JobOutcome, JobRow, JobStatus, WebhookDeliveryRow
from ocr_common.options import OcrOptions
from ocr_testkit.database import explain, keda_query, statements_sent

pytestmark = pytest.mark.mysql


@pytest.fixture
def database_url(mysql_url: str) -> str:
    """KEDA's MySQL scaler only ever asks MySQL: this module runs on it alone."""
    return mysql_url


def pending_pages(sessions: sessionmaker[Session]) -> object:
    with sessions() as session:
        return session.execute(text(keda_query())).scalar_one()


def test_the_trigger_counts_queued_and_running_pages(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    # An empty queue is 0, not NULL: KEDA needs a number.
    assert pending_pages(sessions) == 0
    with sessions.begin() as session:
        images = [
            job_store.create_job(session, document=files.store_document(b"img"), max_attempts=3).id
            for _ in range(3)
        ]
        document = job_store.create_job(
            session,
            document=files.store_document(b"pdf"),
            max_attempts=3,
            options=OcrOptions(),
            pages_total=10,
        ).id
        job_store.create_job(
            session,
            document=files.store_document(b"pdf"),
            max_attempts=3,
            options=OcrOptions(),
            pages_total=4,
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


def fill_finished(sessions: sessionmaker[Session], rows: int) -> None:
    """``rows`` finished jobs without images, as months of use leave the table."""
    stamp = job_store.utcnow()
    values = [
        {
            "id": job_store.new_job_id(),
            "status": JobStatus.SUCCEEDED.value,
            "kind": "sync",
            "created_at": stamp,
            "finished_at": stamp,
            "attempts": 1,
            "max_attempts": 1,
            "image_bytes": 3,
            "text": "text",
        }
        for _ in range(rows)
    ]
    with sessions.begin() as session:
        session.execute(insert(JobRow), values)
        session.execute(text("ANALYZE TABLE jobs"))


def test_the_claim_and_the_trigger_stay_on_a_status_index(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    fill_finished(sessions, 5000)
    with sessions.begin() as session:
        for _ in range(20):
            job_store.create_job(session, document=files.store_document(b"img"), max_attempts=3)
    # The claim as claim_batch sends it, caught on its way to the server.
    with sessions.begin() as session, statements_sent(session.connection().engine) as sent:
        assert len(job_store.claim_batch(session, worker_id="w", lease_s=30, limit=8)) == 8
    [(claim, parameters)] = [(sql, params) for sql, params in sent if "SKIP LOCKED" in sql]
    for statement, params in ((claim, parameters), (keda_query(), None)):
        with sessions() as session:
            [plan] = explain(session.connection(), statement, params)
        # An index that starts with the status: (status, created_at), or for the count also
        # (status, lease_until), which MariaDB picks for it on a table of a million rows.
        assert plan["key"] in ("ix_jobs_status_created", "ix_jobs_status_lease"), plan
        if statement == claim:
            assert plan["key"] == "ix_jobs_status_created", plan
        # Only the queued (and running) rows are read, in index order: no sort, no scan of
        # the 5,000 finished ones. The estimate also counts index entries of rows earlier tests
        # deleted that InnoDB has not purged yet (140 was seen), so the bound is a fifth of
        # the table, which a scan cannot pass.
        assert int(plan["rows"]) < 1000, plan
        assert "filesort" not in plan["Extra"], plan


def test_the_per_key_queue_count_reads_only_the_status_owner_index(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    fill_finished(sessions, 5000)
    with sessions.begin() as session:
        for owner in ("alice", "alice", "alice", "bob", None):
            stored = files.store_document(b"img")
            job_store.create_job(session, document=stored, max_attempts=3, owner=owner)
    with sessions() as session:
        assert job_store.count_queued(session, owner="alice", up_to=10) == 3
        assert job_store.count_queued(session, owner="bob", up_to=10) == 1
        assert job_store.count_queued(session, owner=None, up_to=10) == 1
        # Counted only up to the cap + 1, whatever the backlog.
        assert job_store.count_queued(session, owner="alice", up_to=1) == 2
    with sessions() as session, statements_sent(session.connection().engine) as sent:
        job_store.count_queued(session, owner="alice", up_to=10_000)
        [(statement, parameters)] = sent
        plans = explain(session.connection(), statement, parameters)
    [plan] = [plan for plan in plans if plan["table"] == "jobs"]
    # The key's queued rows, from the index alone: no table rows, no scan of finished jobs.
    assert plan["key"] == "ix_jobs_status_owner", plans
    assert "Using index" in plan["Extra"], plans
    assert int(plan["rows"]) < 100, plans


def test_the_webhook_claim_reads_only_due_deliveries_from_its_index(
    sessions: sessionmaker[Session],
) -> None:
    # 3,000 deliveries done (delivered or given up), 20 due, 20 waiting for their next try.
    fill_finished(sessions, 3040)
    now = job_store.utcnow()
    with sessions() as session:
        ids = session.scalars(select(JobRow.id)).all()

    def delivery(job_id: str, status: str, next_at: object) -> dict[str, object]:
        return {
            "id": job_store.new_message_id(),
            "job_id": job_id,
            "event": "job.succeeded",
            "status": status,
            "created_at": now,
            "attempts": 1,
            "next_attempt_at": next_at,
        }

    later = now + timedelta(hours=1)
    rows = [delivery(i, "delivered", None) for i in ids[:3000]]
    rows += [delivery(i, "pending", now) for i in ids[3000:3020]]
    rows += [delivery(i, "pending", later) for i in ids[3020:3040]]
    with sessions.begin() as session:
        session.execute(insert(WebhookDeliveryRow), rows)
        session.execute(text("ANALYZE TABLE webhook_deliveries"))
    with sessions.begin() as session, statements_sent(session.connection().engine) as sent:
        claimed = job_store.claim_deliveries(session, sender_id="s", lease_s=30, limit=8)
    assert len(claimed) == 8
    [(claim, parameters)] = [(sql, params) for sql, params in sent if "SKIP LOCKED" in sql]
    with sessions() as session:
        [plan] = explain(session.connection(), claim, parameters)
    assert plan["key"] == "ix_webhook_deliveries_claim", plan
    assert int(plan["rows"]) < 300, plan
    assert "filesort" not in plan["Extra"], plan
