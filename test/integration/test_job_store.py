"""The job store against real databases: SQLite and MySQL/MariaDB."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.models import JobImageRow, JobRow, JobStatus

IMAGE = b"\x89PNG fake image bytes"


def queue(sessions: sessionmaker[Session], n: int, max_attempts: int = 3) -> list[str]:
    with sessions.begin() as session:
        return [
            job_store.create_job(
                session, image=IMAGE + bytes([i % 256]), max_attempts=max_attempts
            ).id
            for i in range(n)
        ]


def test_create_then_claim_gives_the_oldest_job_with_its_image(
    sessions: sessionmaker[Session],
) -> None:
    ids = queue(sessions, 3)
    with sessions.begin() as session:
        claimed = job_store.claim_next(session, worker_id="w1", lease_s=30)
    assert claimed is not None
    assert claimed.id == ids[0]
    assert claimed.image == IMAGE + b"\x00"
    assert claimed.attempts == 1
    with sessions() as session:
        job = job_store.get_job(session, ids[0])
    assert job is not None and job.status == JobStatus.RUNNING and job.worker_id == "w1"


def test_claim_on_an_empty_queue_is_none(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert job_store.claim_next(session, worker_id="w1", lease_s=30) is None


def test_finish_writes_the_text_and_deletes_the_image(sessions: sessionmaker[Session]) -> None:
    [job_id] = queue(sessions, 1)
    with sessions.begin() as session:
        job_store.claim_next(session, worker_id="w1", lease_s=30)
    with sessions.begin() as session:
        assert job_store.finish(session, job_id=job_id, worker_id="w1", text="text\n")
    with sessions() as session:
        job = job_store.get_job(session, job_id)
        images = session.scalar(select(func.count()).select_from(JobImageRow))
    assert job is not None
    assert (job.status, job.text, job.finished_at is not None) == (
        JobStatus.SUCCEEDED,
        "text\n",
        True,
    )
    assert images == 0


def test_keep_images_keeps_the_image(sessions: sessionmaker[Session]) -> None:
    [job_id] = queue(sessions, 1)
    with sessions.begin() as session:
        job_store.claim_next(session, worker_id="w1", lease_s=30)
        job_store.finish(session, job_id=job_id, worker_id="w1", text="t", keep_image=True)
    with sessions() as session:
        assert session.get(JobImageRow, job_id) is not None


def test_only_the_lease_holder_can_write(sessions: sessionmaker[Session]) -> None:
    [job_id] = queue(sessions, 1)
    with sessions.begin() as session:
        job_store.claim_next(session, worker_id="w1", lease_s=30)
    with sessions.begin() as session:
        assert not job_store.finish(session, job_id=job_id, worker_id="intruder", text="x")
        assert not job_store.fail(
            session, job_id=job_id, worker_id="intruder", error_code="e", error_message="m"
        )
        assert not job_store.release(session, job_id=job_id, worker_id="intruder")
    with sessions.begin() as session:
        assert job_store.finish(session, job_id=job_id, worker_id="w1", text="ok")
    with sessions.begin() as session:
        # A finished job cannot be finished again, not even by its last holder.
        assert not job_store.finish(session, job_id=job_id, worker_id="w1", text="twice")
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
) -> None:
    [job_id] = queue(sessions, 1, max_attempts=2)
    for attempt in (1, 2):
        with sessions.begin() as session:
            claimed = job_store.claim_next(session, worker_id=f"w{attempt}", lease_s=30)
        assert claimed is not None and claimed.attempts == attempt
        expire_leases(sessions)
        with sessions.begin() as session:
            requeued, failed = job_store.requeue_expired(session)
        assert (requeued, failed) == ((1, 0) if attempt == 1 else (0, 1))
    with sessions() as session:
        job = job_store.get_job(session, job_id)
        image = session.get(JobImageRow, job_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error_code == "attempts_exhausted" and job.error_message
    assert image is None
    # The first worker comes back to life: its late result is refused.
    with sessions.begin() as session:
        assert not job_store.finish(session, job_id=job_id, worker_id="w1", text="late")


def test_heartbeat_extends_only_the_holders_leases(sessions: sessionmaker[Session]) -> None:
    ids = queue(sessions, 2)
    with sessions.begin() as session:
        job_store.claim_next(session, worker_id="w1", lease_s=1)
        job_store.claim_next(session, worker_id="w2", lease_s=1)
    with sessions.begin() as session:
        assert job_store.heartbeat(session, worker_id="w1", job_ids=ids, lease_s=60) == 1
    expire_check = job_store.utcnow() + timedelta(seconds=30)
    with sessions() as session:
        leases = dict(session.execute(select(JobRow.worker_id, JobRow.lease_until)).all())
    assert leases["w1"] is not None and leases["w1"] > expire_check
    assert leases["w2"] is not None and leases["w2"] < expire_check


def test_release_without_counting_gives_the_attempt_back(sessions: sessionmaker[Session]) -> None:
    [job_id] = queue(sessions, 1)
    with sessions.begin() as session:
        job_store.claim_next(session, worker_id="w1", lease_s=30)
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


def test_racing_claimers_never_get_the_same_job(sessions: sessionmaker[Session]) -> None:
    total = 120
    queue(sessions, total)
    claimed: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    errors: list[BaseException] = []
    start = threading.Barrier(len(claimed))

    def claimer(name: str) -> None:
        try:
            start.wait()
            while True:
                with sessions.begin() as session:
                    job = job_store.claim_next(session, worker_id=name, lease_s=30)
                if job is None:
                    return
                claimed[name].append(job.id)
                with sessions.begin() as session:
                    assert job_store.finish(session, job_id=job.id, worker_id=name, text=name)
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


def test_purge_deletes_only_jobs_finished_before_the_cut_off(
    sessions: sessionmaker[Session],
) -> None:
    old, recent, pending = queue(sessions, 3)
    for job_id in (old, recent):
        with sessions.begin() as session:
            claimed = job_store.claim_next(session, worker_id="w", lease_s=30)
            assert claimed is not None and claimed.id == job_id
            job_store.finish(session, job_id=job_id, worker_id="w", text="t", keep_image=True)
    with sessions.begin() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == old)
            .values(finished_at=job_store.utcnow() - timedelta(days=10))
        )
    cut_off = job_store.utcnow() - timedelta(days=7)
    with sessions.begin() as session:
        assert job_store.purge_finished(session, finished_before=cut_off) == 1
    with sessions() as session:
        assert job_store.get_job(session, old) is None
        assert session.get(JobImageRow, old) is None
        assert job_store.get_job(session, recent) is not None
        # A queued job is never purged, however old.
        assert job_store.get_job(session, pending) is not None
