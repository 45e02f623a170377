"""The blob store on both backends: a folder, and a real S3 server (SeaweedFS, through boto3);
and the sweep that deletes what no job holds, on a real database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import (
    BlobMissing,
    BlobStore,
    BlobStoreError,
    FileStore,
    JobFiles,
    S3Store,
    job_id_of,
    open_store,
)
from ocr_common.models import JobOutcome, JobRow
from ocr_server.documents import SWEEP_PAGE, BlobSweep, Documents
from ocr_server.metrics import DispatcherCounters
from ocr_server.transactions import Transactions
from ocr_testkit.s3_server import SeaweedS3


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each test runs on a folder and on a bucket of the real S3 server (under a prefix)."""
    if request.param == "file":
        return open_store(f"file:{tmp_path / 'blobs'}")
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    return open_store(f"s3://{server.create_bucket()}/ocr/blobs")


@pytest.fixture
def job_files(store: BlobStore) -> JobFiles:
    return JobFiles(store)


def test_a_blob_comes_back_as_it_was_stored(store: BlobStore) -> None:
    store.check()
    data = bytes(range(256)) * 4000 + os.urandom(1000)
    store.put("jobs/x/document", data)
    assert store.get("jobs/x/document") == data
    # Written again: the new bytes, whole.
    store.put("jobs/x/document", b"second")
    assert store.get("jobs/x/document") == b"second"


def test_a_missing_blob_is_told_apart_from_a_store_that_fails(store: BlobStore) -> None:
    with pytest.raises(BlobMissing):
        store.get("jobs/none/document")
    # Deleting what is not there is no error.
    store.delete(["jobs/none/document"])


def test_listing_is_in_key_order_from_where_it_stopped(store: BlobStore) -> None:
    keys = [f"jobs/{n:03}/document" for n in range(12)] + ["jobs/005/pages/1.png", "other/x"]
    for key in keys:
        store.put(key, key.encode())
    under_jobs = sorted(key for key in keys if key.startswith("jobs/"))
    first = store.list("jobs/", limit=5)
    assert [blob.key for blob in first] == under_jobs[:5]
    rest = store.list("jobs/", after=first[-1].key, limit=100)
    assert [blob.key for blob in rest] == under_jobs[5:]
    assert all(blob.size == len(blob.key) for blob in first + rest)
    assert [blob.key for blob in store.list("jobs/005/", limit=10)] == [
        "jobs/005/document",
        "jobs/005/pages/1.png",
    ]
    store.delete(under_jobs)
    assert store.list("jobs/", limit=100) == []
    assert store.get("other/x") == b"other/x"


def test_keys_are_ours_alone(store: BlobStore) -> None:
    for key in ("../escape", "jobs/../../x", "/abs", "jobs//x", "jobs/x y", ""):
        with pytest.raises(ValueError):
            store.put(key, b"x")


def test_a_jobs_files_are_its_prefix(job_files: JobFiles) -> None:
    stored = job_files.store_document(b"the scan")
    other = job_files.store_document(b"the scan")
    # The same bytes twice are two documents, each under its own new job id.
    assert stored.job_id != other.job_id and stored.digest == other.digest
    assert stored.key == f"jobs/{stored.job_id}/document" and job_id_of(stored.key) == stored.job_id
    job_files.store_artifact(stored.job_id, "pages/1.png", b"png")
    assert job_files.read_artifact(stored.job_id, "pages/1.png") == b"png"
    job_files.remove_jobs([stored.job_id])
    with pytest.raises(BlobMissing):
        job_files.read_document(stored.key)
    with pytest.raises(BlobMissing):
        job_files.read_artifact(stored.job_id, "pages/1.png")
    assert job_files.read_document(other.key) == b"the scan"
    job_files.release_documents([other.job_id])
    assert job_files.store.list("jobs/", limit=10) == []


def test_a_key_outside_the_layout_names_no_job() -> None:
    job_id = "0b7e54d8-4f59-4f4e-9d0a-3c4b0f6b5a11"
    assert job_id_of(f"jobs/{job_id}/pages/2.png") == job_id
    for key in (f"other/{job_id}/document", "jobs/not-a-uuid/document", f"jobs/{job_id.upper()}/x"):
        assert job_id_of(key) is None


def test_a_bucket_that_does_not_exist_fails_the_check(s3_server: SeaweedS3) -> None:
    with pytest.raises(BlobStoreError, match="bucket no-such-bucket must exist"):
        S3Store("no-such-bucket").check()


def test_a_store_that_does_not_answer_is_an_error_not_a_missing_blob(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with pytest.raises(BlobStoreError):
        S3Store("any-bucket").get("jobs/x/document")


def test_wrong_credentials_are_refused(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.create_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(BlobStoreError):
        S3Store(bucket).put("jobs/x/document", b"x")


def test_a_folder_that_cannot_be_written_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BlobStoreError, match="cannot write"):
        FileStore(tmp_path / "file" / "blobs").check()


# -- the sweep -------------------------------------------------------------------------------


@pytest.fixture
def transactions(sessions: sessionmaker[Session]) -> Iterator[Transactions]:
    yield Transactions(sessions, DispatcherCounters())


def sweep(job_files: JobFiles, transactions: Transactions, grace_s: float, **later: float) -> int:
    """One full pass of the sweep (as many rounds as pages), ``later`` from now."""
    sweeper = BlobSweep(Documents(job_files), transactions, grace_s)
    now = job_store.utcnow() + timedelta(**later)

    async def whole_pass() -> int:
        deleted = await sweeper.sweep(now)
        while sweeper._after is not None:
            deleted += await sweeper.sweep(now)
        return deleted

    return asyncio.run(whole_pass())


def queue(sessions: sessionmaker[Session], job_files: JobFiles, data: bytes) -> str:
    document = job_files.store_document(data)
    with sessions.begin() as session:
        return job_store.create_job(session, document=document, max_attempts=3).id


def test_the_sweep_deletes_what_no_job_holds_once_past_the_grace(
    sessions: sessionmaker[Session], job_files: JobFiles, transactions: Transactions
) -> None:
    queued = queue(sessions, job_files, b"queued")
    finished = queue(sessions, job_files, b"finished")
    kept = queue(sessions, job_files, b"kept")
    deleted = queue(sessions, job_files, b"deleted")
    # An intake that stored its document and never committed its job.
    never = job_files.store_document(b"never committed")
    with sessions.begin() as session:
        job_store.claim_batch(session, worker_id="w", lease_s=30, limit=3)
        job_store.finish_batch(session, worker_id="w", outcomes=[JobOutcome(finished, text="t")])
        job_store.finish_batch(
            session, worker_id="w", outcomes=[JobOutcome(kept, text="t")], keep_images=True
        )
        session.execute(update(JobRow).where(JobRow.id == deleted).values(status="canceled"))
        assert job_store.delete_finished(session, deleted)
    job_files.store_artifact(kept, "pages/1.png", b"preview")
    job_files.store_artifact(deleted, "pages/1.png", b"preview")
    before = {blob.key for blob in job_files.store.list("jobs/", limit=100)}
    assert len(before) == 7
    # Within the grace nothing goes: an intake may be about to commit.
    assert sweep(job_files, transactions, grace_s=3600) == 0
    # Past it: the files of the job never committed, of the deleted one, and the document of
    # the one that finished without keeping it.
    assert sweep(job_files, transactions, grace_s=3600, seconds=3601) == 4
    left = {blob.key for blob in job_files.store.list("jobs/", limit=100)}
    assert left == {
        JobFiles.document_key(queued),
        JobFiles.document_key(kept),
        f"jobs/{kept}/pages/1.png",
    }
    assert never.key in before - left


def test_the_sweep_goes_page_by_page_through_many_files(
    sessions: sessionmaker[Session], tmp_path: Path, transactions: Transactions
) -> None:
    job_files = JobFiles(FileStore(tmp_path / "blobs"))
    orphans = [job_files.store_document(b"%d" % n) for n in range(SWEEP_PAGE + 5)]
    live = queue(sessions, job_files, b"live")
    sweeper = BlobSweep(Documents(job_files), transactions, grace_s=1)
    later = job_store.utcnow() + timedelta(seconds=5)
    first = asyncio.run(sweeper.sweep(later))
    assert sweeper._after is not None and 0 < first <= SWEEP_PAGE
    second = asyncio.run(sweeper.sweep(later))
    assert first + second == len(orphans) and sweeper._after is None
    assert [blob.key for blob in job_files.store.list("jobs/", limit=10)] == [
        JobFiles.document_key(live)
    ]
