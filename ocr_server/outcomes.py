"""The outcome writer: how jobs ended, written together when several end at once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_result, wait_fixed

from ocr_common import job_store
from ocr_common.db import is_connection_error
from ocr_common.models import JobOutcome

from .documents import Documents
from .transactions import DB_RETRY_S, Transactions

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    outcome: JobOutcome
    written: asyncio.Future[bool | None]
    # Past this (monotonic) the write is given up: someone else may hold the job by then.
    deadline: float


class OutcomeWriter:
    """Writes the outcomes of jobs (``finish_batch``): a lone one at once, those ready while a
    write is in flight together in the next; through an outage, each for up to a lease."""

    def __init__(
        self,
        transactions: Transactions,
        documents: Documents,
        *,
        worker_id: str,
        keep_images: bool,
        lease_s: float,
    ):
        self._db = transactions
        self._documents = documents
        self._worker_id = worker_id
        self._keep_images = keep_images
        self._lease_s = lease_s
        self._pending: list[_Pending] = []
        # The jobs whose outcome a stop left unwritten: still this server's, to give back.
        self.unwritten: list[str] = []
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="outcomes")
        self._task.add_done_callback(self._ended)

    async def write(self, outcome: JobOutcome) -> bool | None:
        """Record how a job ended: True, False (no longer ours) or None (never written)."""
        if self._task is None or self._task.done() or self._closing.is_set():
            return None
        written: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(outcome, written, time.monotonic() + self._lease_s))
        self._ready.set()
        return await written

    async def close(self) -> None:
        """Write what is ready (one more try, without waiting out an outage), then take no more."""
        self._closing.set()
        self._ready.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Nothing may wait for a writer that is gone: a job task waiting for ever would keep
        # its lease alive (the heartbeat) and never be re-queued.
        if not task.cancelled() and task.exception() is not None:
            log.error("the outcome writer failed", exc_info=task.exception())
        for entry in self._pending:
            _settle(entry, None)
        self._pending = []

    async def _drain(self) -> None:
        # What an outage kept out is tried again every DB_RETRY_S, with what became ready
        # meanwhile, until each is written or given up; close() cuts the wait short.
        retrying = AsyncRetrying(
            retry=retry_if_result(bool), wait=wait_fixed(DB_RETRY_S), sleep=self._pause
        )
        while not (self._closing.is_set() and not self._pending):
            await self._ready.wait()
            self._ready.clear()
            await retrying(self._write_pending)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _write_pending(self) -> list[_Pending]:
        """Write every pending outcome; returns those left for another try."""
        batch, self._pending = self._pending, []
        failed = await self._write(batch)
        retry_before = time.monotonic() + DB_RETRY_S
        for entry in failed:
            if self._closing.is_set() or entry.deadline < retry_before:
                log.error("job %s: giving up its result write", entry.outcome.job_id)
                _settle(entry, None)
                if self._closing.is_set():
                    self.unwritten.append(entry.outcome.job_id)
        kept = [entry for entry in failed if not entry.written.done()]
        self._pending[:0] = kept
        return kept

    async def _write(self, batch: list[_Pending]) -> list[_Pending]:
        """Write ``batch`` in one transaction; returns the entries that did not go through."""
        if not batch:
            return []
        outcomes = [entry.outcome for entry in batch]
        finish = functools.partial(
            job_store.finish_batch,
            worker_id=self._worker_id,
            outcomes=outcomes,
            keep_images=self._keep_images,
        )
        try:
            written = set(await self._db.run(finish))
        except Exception as exc:  # noqa: BLE001 - outages are expected; the caller retries
            self._db.count_error()
            if len(batch) > 1 and not is_connection_error(exc):
                # Not an outage but something in one outcome: each alone, so that one cannot
                # hold back the others.
                failed: list[_Pending] = []
                for entry in batch:
                    failed += await self._write([entry])
                return failed
            log.warning(
                "could not write %d outcome(s) (%s: %s); retrying in %.0f s",
                len(batch),
                type(exc).__name__,
                exc,
                DB_RETRY_S,
            )
            return batch
        for entry in batch:
            _settle(entry, entry.outcome.job_id in written)
        if not self._keep_images:
            # Committed: their documents are no job's now (the sweep deletes any left over).
            await self._documents.release([o.job_id for o in outcomes if o.job_id in written])
        return []


def _settle(entry: _Pending, written: bool | None) -> None:
    # The job's task may be gone (cancelled by a stop): nobody waits for the answer then.
    if not entry.written.done():
        entry.written.set_result(written)
