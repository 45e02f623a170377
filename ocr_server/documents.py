"""The documents of jobs, in the blob store: read when a job is claimed, let go of once its
outcome is written, and swept when no job claims them."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

from ocr_common import job_store
from ocr_common.blobs import JOBS_PREFIX, BlobStoreError, JobFiles, job_id_of
from ocr_common.models import ClaimedJob

from .transactions import Transactions

log = logging.getLogger(__name__)
T = TypeVar("T")

# Blob reads and deletes at once: engines wait for their documents on these threads, never on
# the ones database transactions run on.
BLOB_THREADS = 16
# Keys one round of the sweep looks at (one LIST call on S3).
SWEEP_PAGE = 1000


class Documents:
    """A server's access to the blob store, on threads of its own."""

    def __init__(self, files: JobFiles, threads: int = BLOB_THREADS):
        self.files = files
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="blobs")

    async def io(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` on the blob threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    async def read(self, job: ClaimedJob) -> bytes:
        """The document a claimed job reads (``BlobMissing``, ``BlobStoreError``)."""
        if job.image is not None:  # queued before the blob store: its bytes came with the claim
            return job.image
        if job.document_key is None:
            raise ValueError(f"job {job.id} has no document")  # the claim fails such jobs
        return await self.io(self.files.read_document, job.document_key)

    async def release(self, job_ids: Sequence[str]) -> None:
        """Delete the documents of jobs whose outcome is written (or leave them to the sweep)."""
        if job_ids:
            await self._quietly(self.files.release_documents, job_ids)

    async def remove(self, job_ids: Sequence[str]) -> None:
        """Delete every file of jobs that are deleted; what fails is left to the sweep."""
        if job_ids:
            await self._quietly(self.files.remove_jobs, job_ids)

    async def _quietly(self, work: Callable[[Sequence[str]], None], job_ids: Sequence[str]) -> None:
        try:
            await self.io(work, job_ids)
        except BlobStoreError as exc:
            log.warning("files of %d job(s) not deleted (%s); the sweep will", len(job_ids), exc)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class BlobSweep:
    """Deletes, a page of keys a round, the files of jobs that do not exist or hold no
    ``document_key``, once older than ``grace_s`` (an intake about to commit is never swept)."""

    def __init__(self, documents: Documents, transactions: Transactions, grace_s: float):
        self._documents = documents
        self._db = transactions
        self._grace = timedelta(seconds=grace_s)
        self._after: str | None = None

    async def sweep(self, now: datetime | None = None) -> int:
        """One round; returns how many blobs it deleted."""
        files = self._documents.files
        found = await self._documents.io(
            lambda: files.store.list(JOBS_PREFIX, after=self._after, limit=SWEEP_PAGE)
        )
        self._after = found[-1].key if len(found) == SWEEP_PAGE else None
        newest: dict[str, datetime] = {}
        for blob in found:
            job_id = job_id_of(blob.key)
            if job_id is not None:
                newest[job_id] = max(blob.modified, newest.get(job_id, blob.modified))
        if not newest:
            return 0

        live = await self._db.run(functools.partial(job_store.document_keys, job_ids=list(newest)))
        cut_off = (now or job_store.utcnow()) - self._grace
        orphans = {
            job for job, modified in newest.items() if not live.get(job) and modified < cut_off
        }
        keys = [blob.key for blob in found if job_id_of(blob.key) in orphans]
        if keys:
            await self._documents.io(files.store.delete, keys)
            log.info("swept %d file(s) of %d job(s) no job holds", len(keys), len(orphans))
        return len(keys)
