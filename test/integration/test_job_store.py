"""The job store against real databases: SQLite and MySQL/MariaDB."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import JobFiles
from ocr_common.models import JobImageRow, JobOutcome, JobRow, JobStatus
from ocr_testkit.database import claim_next, fail, finish, statements_sent
from ocr_testkit.pages import packed_reading, page_reading

IMAGE = b"\x89PNG fake image bytes"


def queue(
    sessions: sessionmaker[Session], files: JobFiles, n: int, max_attempts: int = 3
) -> list[str]:
    documents = [files.store_document(IMAGE + bytes([i % 256])) for i in range(n)]
    with sessions.begin() as session:
        return [
            job_store.create_job(session, document=document, max_attempts=max_attempts).id
            for document in documents
        ]


def document_keys(sessions: sessionmaker[Session]) -> dict[str, str | None]:
    with sessions() as session:
        return dict(session.execute(select(JobRow.id, JobRow.document_key)).all())


def claim(sessions: sessionmaker[Session], worker_id: str = "w1", lease_s: float = 30) -> Any:
    """The next job, claimed by ``worker_id`` in a transaction of its own (None: none)."""
    with sessions.begin() as session:
        return claim_next(session, worker_id=worker_id, lease_s=lease_s)


def test_create_then_claim_gives_the_oldest_job_with_its_image(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, 3)
    claimed = claim(sessions)
    assert claimed is not None
    assert claimed.id == ids[0]
    assert claimed.image is None and claimed.document_key == f"jobs/{ids[0]}/document"
    assert files.read_document(claimed.document_key) == IMAGE + b"\x00"
    assert claimed.attempts == 1
    with sessions() as session:
        job = job_store.get_job(session, ids[0])
    assert job is not None and job.status == JobStatus.RUNNING and job.worker_id == "w1"


def test_a_document_goes_to_the_blob_store_and_none_of_it_to_the_database(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    document = bytes(range(256)) * 4096  # 1 MiB, every byte value
    stored = files.store_document(document)
    with sessions.begin() as session, statements_sent(session.connection().engine) as sent:
        job = job_store.create_job(session, document=stored, max_attempts=1)
    assert job.id == stored.job_id and files.read_document(stored.key) == document
    # One INSERT of the job's row, its size and digest: no byte of the document.
    assert [statement.split()[:3] for statement, _ in sent] == [["INSERT", "INTO", "jobs"]]
    assert len(repr(sent)) < 4096
    with sessions() as session:
        row = session.get(JobRow, job.id)
        assert session.scalar(select(func.count()).select_from(JobImageRow)) == 0
    assert row is not None and row.document_key == stored.key
    assert (row.image_bytes, row.image_sha256) == (
        len(document),
        hashlib.sha256(document).hexdigest(),
    )


def test_claim_on_an_empty_queue_is_none(sessions: sessionmaker[Session]) -> None:
    assert claim(sessions) is None


def test_finish_writes_the_text_and_lets_go_of_the_document(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    [job_id] = queue(sessions, files, 1)
    claim(sessions)
    with sessions.begin() as session:
        assert finish(session, job_id=job_id, worker_id="w1", text="text\n")
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None
    assert (job.status, job.text, job.finished_at is not None) == (
        JobStatus.SUCCEEDED,
        "text\n",
        True,
    )
    # No job holds it now: the OCR server deletes it once this is committed.
    assert job.document_key is None


def test_keep_images_keeps_the_image(sessions: sessionmaker[Session], files: JobFiles) -> None:
    [job_id] = queue(sessions, files, 1)
    with sessions.begin() as session:
        claim_next(session, worker_id="w1", lease_s=30)
        finish(session, job_id=job_id, worker_id="w1", text="t", keep_image=True)
    assert document_keys(sessions) == {job_id: f"jobs/{job_id}/document"}


def test_only_the_lease_holder_can_write(sessions: sessionmaker[Session], files: JobFiles) -> None:
    [job_id] = queue(sessions, files, 1)
    claim(sessions)
    with sessions.begin() as session:
        assert not finish(session, job_id=job_id, worker_id="intruder", text="x")
        assert not fail(
            session, job_id=job_id, worker_id="intruder", error_code="e", error_message="m"
        )
        assert not job_store.release(session, job_id=job_id, worker_id="intruder")
    with sessions.begin() as session:
        assert finish(session, job_id=job_id, worker_id="w1", text="ok")
    with sessions.begin() as session:
        # A finished job cannot be finished again, not even by its last holder.
        assert not finish(session, job_id=job_id, worker_id="w1", text="twice")
        job = job_store.get_job(session, job_id)
    assert job is not None and job.text == "ok"


def expire_leases(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.status == "running")
            .values(lease_until=job_store.utcnow() - timedelta(seconds=1))
        )


def test_reaper_requeues_expired_leases_then_fails_after_max_attempts(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    [job_id] = queue(sessions, files, 1, max_attempts=2)
    for attempt in (1, 2):
        claimed = claim(sessions, f"w{attempt}")
        assert claimed is not None and claimed.attempts == attempt
        expire_leases(sessions)
        with sessions.begin() as session:
            requeued, failed = job_store.requeue_expired(session)
        assert (requeued, failed) == ((1, 0) if attempt == 1 else (0, 1))
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error_code == "attempts_exhausted" and job.error_message
    assert job.document_key is None  # for the sweep
    # The first worker comes back to life: its late result is refused.
    with sessions.begin() as session:
        assert not finish(session, job_id=job_id, worker_id="w1", text="late")


def test_heartbeat_extends_only_the_holders_leases(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    ids = queue(sessions, files, 2)
    claim(sessions, "w1", lease_s=1)
    claim(sessions, "w2", lease_s=1)
    with sessions.begin() as session:
        assert job_store.heartbeat(session, worker_id="w1", job_ids=ids, lease_s=60) == 1
    expire_check = job_store.utcnow() + timedelta(seconds=30)
    with sessions() as session:
        leases = dict(session.execute(select(JobRow.worker_id, JobRow.lease_until)).all())
    assert leases["w1"] is not None and leases["w1"] > expire_check
    assert leases["w2"] is not None and leases["w2"] < expire_check


def test_release_without_counting_gives_the_attempt_back(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    [job_id] = queue(sessions, files, 1)
    with sessions.begin() as session:
        claim_next(session, worker_id="w1", lease_s=30)
        assert job_store.release(session, job_id=job_id, worker_id="w1", count_attempt=False)
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None and job.status == JobStatus.QUEUED and job.attempts == 0


def test_record_finished_stores_a_sync_job_without_image(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job = job_store.record_finished(
            session, image=IMAGE, started_at=job_store.utcnow(), text="sync\n"
        )
    with sessions() as session:
        assert job_store.get_job(session, job.id) == job
        assert session.get(JobImageRow, job.id) is None
        assert job_store.count_by_status(session)["succeeded"] == 1


def test_purge_deletes_only_jobs_finished_before_the_cut_off(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    old, recent, pending = queue(sessions, files, 3)
    for job_id in (old, recent):
        with sessions.begin() as session:
            claimed = claim_next(session, worker_id="w", lease_s=30)
            assert claimed is not None and claimed.id == job_id
            finish(session, job_id=job_id, worker_id="w", text="t", keep_image=True)
    with sessions.begin() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == old)
            .values(finished_at=job_store.utcnow() - timedelta(days=10))
        )
    cut_off = job_store.utcnow() - timedelta(days=7)
    with sessions.begin() as session:
        # It kept its document: its files are for the caller to delete.
        assert job_store.purge_finished(session, finished_before=cut_off) == (1, [old])
    with sessions() as session:
        assert job_store.get_job(session, old) is None
        assert job_store.get_job(session, recent) is not None
        # A queued job is never purged, however old.
        assert job_store.get_job(session, pending) is not None


def test_claim_batch_takes_the_oldest_jobs_in_order_with_their_documents(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, 5)
    with sessions.begin() as session:
        first = job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=3)
    assert [job.id for job in first] == ids[:3]
    documents = [files.read_document(str(job.document_key)) for job in first]
    assert documents == [IMAGE + bytes([i]) for i in range(3)]
    assert all(job.attempts == 1 for job in first)
    with sessions.begin() as session:
        rest = job_store.claim_batch(session, worker_id="w2", lease_s=30, limit=10)
        assert job_store.claim_batch(session, worker_id="w2", lease_s=30, limit=10) == []
    assert [job.id for job in rest] == ids[3:]
    with sessions() as session:
        holders = dict(session.execute(select(JobRow.id, JobRow.worker_id)).all())
        statuses = job_store.count_by_status(session)
    assert holders == {**dict.fromkeys(ids[:3], "w1"), **dict.fromkeys(ids[3:], "w2")}
    assert statuses["running"] == 5


def test_finish_batch_writes_each_outcome_and_lets_go_of_the_documents(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    ids = queue(sessions, files, 3)
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=3)
    pages = [page_reading(1, "page one\n")]
    outcomes = [
        JobOutcome(ids[0], text="plain\n"),
        JobOutcome(ids[1], error_code="engine_timeout", error_message="too slow"),
        JobOutcome(ids[2], text="page one\n", pages=[packed_reading(1, "page one\n")]),
    ]
    with sessions.begin() as session:
        written = job_store.finish_batch(session, worker_id="w1", outcomes=outcomes)
    assert written == ids
    with sessions() as session:
        jobs = {job_id: job_store.get_job(session, job_id) for job_id in ids}
        stored = job_store.get_pages(session, ids[2])
    done, failed, document = (jobs[job_id] for job_id in ids)
    assert done is not None and (done.status, done.text) == (JobStatus.SUCCEEDED, "plain\n")
    assert failed is not None and (failed.status, failed.error_code, failed.text) == (
        JobStatus.FAILED,
        "engine_timeout",
        None,
    )
    assert document is not None and document.status == JobStatus.SUCCEEDED
    assert document.pages_done == 1 and stored == pages
    assert all(job is not None and job.finished_at is not None for job in jobs.values())
    assert document_keys(sessions) == dict.fromkeys(ids)


def test_finish_batch_with_keep_images_keeps_them(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    ids = queue(sessions, files, 2)
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=2)
        outcomes = [JobOutcome(job_id, text="t") for job_id in ids]
        job_store.finish_batch(session, worker_id="w1", outcomes=outcomes, keep_images=True)
    assert document_keys(sessions) == {job_id: f"jobs/{job_id}/document" for job_id in ids}


def test_a_workers_late_outcome_is_refused_once_it_has_claimed_the_job_again(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    # w1 is cut off while it reads attempt 1; its lease runs out and the job is requeued; back
    # on the network, w1 claims it again (attempt 2) before its late write of attempt 1 lands.
    [job_id] = queue(sessions, files, 1)
    assert claim(sessions, "w1").attempts == 1
    expire_leases(sessions)
    with sessions.begin() as session:
        assert job_store.requeue_expired(session) == (1, 0)
    assert claim(sessions, "w1").attempts == 2
    late = JobOutcome(job_id, text="attempt 1", attempt=1)
    with sessions.begin() as session:
        assert job_store.finish_batch(session, worker_id="w1", outcomes=[late]) == []
    with sessions() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None and (job.status, job.worker_id) == (JobStatus.RUNNING, "w1")
    assert document_keys(sessions)[job_id] is not None  # attempt 2 still reads it
    current = JobOutcome(job_id, text="attempt 2", attempt=2)
    with sessions.begin() as session:
        assert job_store.finish_batch(session, worker_id="w1", outcomes=[current]) == [job_id]


def test_finish_batch_refuses_a_worker_whose_lease_was_taken_over(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    lost, kept = queue(sessions, files, 2)
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=2)
    # w1 stops answering about one job: its lease runs out, the reaper requeues it, w2 takes it.
    with sessions.begin() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == lost)
            .values(lease_until=job_store.utcnow() - timedelta(seconds=1))
        )
        assert job_store.requeue_expired(session) == (1, 0)
    with sessions.begin() as session:
        [taken] = job_store.claim_batch(session, worker_id="w2", lease_s=30, limit=5)
    assert taken.id == lost and taken.attempts == 2
    outcomes = [JobOutcome(lost, text="late"), JobOutcome(kept, text="w1")]
    with sessions.begin() as session:
        assert job_store.finish_batch(session, worker_id="w1", outcomes=outcomes) == [kept]
    with sessions() as session:
        job = job_store.get_job(session, lost)
    # The job w2 now reads keeps its document: w1's late batch did not let go of it.
    assert document_keys(sessions)[lost] is not None
    assert job is not None and (job.status, job.worker_id, job.text) == (
        JobStatus.RUNNING,
        "w2",
        None,
    )
    with sessions.begin() as session:
        written = job_store.finish_batch(
            session, worker_id="w2", outcomes=[JobOutcome(lost, text="w2")]
        )
        assert written == [lost]
        # Finished jobs cannot be finished again, not even by their last holder.
        assert job_store.finish_batch(session, worker_id="w2", outcomes=[JobOutcome(lost)]) == []
    with sessions() as session:
        texts = dict(session.execute(select(JobRow.id, JobRow.text)).all())
    assert texts == {lost: "w2", kept: "w1"}


def test_claim_batch_fails_a_queued_job_with_no_document_at_all(
    sessions: sessionmaker[Session],
    files: JobFiles,
) -> None:
    broken, good = queue(sessions, files, 2)
    with sessions.begin() as session:
        session.execute(update(JobRow).where(JobRow.id == broken).values(document_key=None))
    with sessions.begin() as session:
        claimed = job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=5)
    assert [job.id for job in claimed] == [good]
    with sessions() as session:
        job = job_store.get_job(session, broken)
    assert job is not None and (job.status, job.error_code) == (
        JobStatus.FAILED,
        "document_missing",
    )
    assert job.error_message and "submit it again" in job.error_message


def queue_as_before_0010(sessions: sessionmaker[Session], document: bytes) -> str:
    """A job queued before the blob store: its bytes in job_images, no document_key."""
    with sessions.begin() as session:
        job_id = job_store.record_finished(
            session, image=document, started_at=job_store.utcnow(), text=None
        ).id
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(status="queued", kind="async", finished_at=None, attempts=0, max_attempts=3)
        )
        session.execute(insert(JobImageRow).values(job_id=job_id, data=document))
    return job_id


def test_a_job_queued_before_the_blob_store_is_read_from_job_images_and_emptied(
    sessions: sessionmaker[Session], files: JobFiles
) -> None:
    old = queue_as_before_0010(sessions, b"old bytes")
    [new] = queue(sessions, files, 1)
    with sessions.begin() as session:
        first, second = job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=2)
    assert (first.id, first.image, first.document_key) == (old, b"old bytes", None)
    assert (second.id, second.image) == (new, None)
    outcomes = [JobOutcome(old, text="old\n"), JobOutcome(new, text="new\n")]
    with sessions.begin() as session:
        assert job_store.finish_batch(session, worker_id="w1", outcomes=outcomes) == [old, new]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(JobImageRow)) == 0


def claim_and_finish(sessions: sessionmaker[Session], name: str, limit: int) -> list[str]:
    """Claim up to ``limit`` jobs as worker ``name`` (claim_next when 1, else claim_batch) and
    finish them with the text ``name``; the ids claimed, none once the queue is empty."""
    if limit == 1:
        job = claim(sessions, name)
        jobs = [job] if job else []
    else:
        with sessions.begin() as session:
            jobs = job_store.claim_batch(session, worker_id=name, lease_s=30, limit=limit)
    ids = [job.id for job in jobs]
    with sessions.begin() as session:
        if limit == 1:
            assert all(finish(session, job_id=i, worker_id=name, text=name) for i in ids)
        else:
            outcomes = [JobOutcome(job_id, text=name) for job_id in ids]
            assert job_store.finish_batch(session, worker_id=name, outcomes=outcomes) == ids
    return ids


@pytest.mark.parametrize(
    ("total", "claimers"),
    [
        (120, {"a": 1, "b": 1, "c": 1}),
        # Three claimers take batches of 7 and finish them together; one claims one at a time.
        (300, {"a": 7, "b": 7, "c": 7, "single": 1}),
    ],
    ids=["single", "batch-and-single"],
)
def test_racing_claimers_never_get_the_same_job(
    sessions: sessionmaker[Session], files: JobFiles, total: int, claimers: dict[str, int]
) -> None:
    queue(sessions, files, total)
    claimed: dict[str, list[str]] = {name: [] for name in claimers}
    errors: list[BaseException] = []
    start = threading.Barrier(len(claimed))

    def claimer(name: str) -> None:
        try:
            start.wait()
            for _ in range(total):  # at most every job, by one claimer
                ids = claim_and_finish(sessions, name, claimers[name])
                if not ids:
                    return
                claimed[name].extend(ids)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(name,)) for name in claimed]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert time.monotonic() - began < 120
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == total
    assert len(set(every)) == total
    with sessions() as session:
        texts = dict(session.execute(select(JobRow.id, JobRow.text)).all())
    # Each job's result was written by the one claimer that got it.
    for name, ids in claimed.items():
        assert all(texts[job_id] == name for job_id in ids)
    assert set(document_keys(sessions).values()) == {None}


def test_finish_batch_splits_large_results_into_several_statements(
    sessions: sessionmaker[Session], files: JobFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = queue(sessions, files, 5)
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w1", lease_s=30, limit=5)
    # Room for two texts a statement: 5 outcomes take 3 UPDATEs, each its own jobs.
    monkeypatch.setattr(job_store, "FINISH_STATEMENT_BYTES", 20)
    outcomes = [JobOutcome(job_id, text=f"text {i:04}\n") for i, job_id in enumerate(ids)]
    with sessions.begin() as session, statements_sent(session.connection().engine) as sent:
        written = job_store.finish_batch(session, worker_id="w1", outcomes=outcomes)
    assert written == ids
    assert sum(statement.startswith("UPDATE jobs") for statement, _ in sent) == 3
    with sessions() as session:
        texts = dict(session.execute(select(JobRow.id, JobRow.text)).all())
    assert texts == {outcome.job_id: outcome.text for outcome in outcomes}
