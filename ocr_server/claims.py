"""The claim loop: claims, in one transaction, a queued job for each free engine and one more
(``AHEAD``), which waits for the first engine to come free."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.models import ClaimedJob, JobOutcome
from ocr_common.result import pack_page
from ocr_common.settings import Settings

from .documents import Documents
from .metrics import DispatcherCounters
from .pool import Engine, EnginePool
from .transactions import DB_RETRY_S, Transactions

log = logging.getLogger(__name__)

# Jobs claimed beyond the free engines. An engine that ends a page starts the next job at once
# rather than waiting for a claim (three statements and a commit: 7-16 ms on a loaded 2-core
# machine, a tenth of a small page's time) and its document. More would hold jobs that another
# server's idle engines could read. None is claimed while a synchronous read or a further page
# of a document being read waits for an engine (those come first: the job would wait, shown as
# running, behind every page), unless the queue's turn against synchronous reads is due
# (pool.QUEUE_TURN_S); one that still gets no engine within a third of a lease goes back to the
# queue, for any server, and this one claims no job ahead for as long.
AHEAD = 1


class Claim(NamedTuple):
    """What one claim transaction took."""

    to_read: list[ClaimedJob]
    taken: int  # from the queue: those to read, and those answered from a stored result
    reused: list[str]  # the jobs answered from a stored result, finished by the claim


class ClaimLoop:
    """Claims a job for every free engine and ``AHEAD`` more, which wait for an engine, and
    claims again as soon as one of those has its engine."""

    def __init__(
        self,
        transactions: Transactions,
        pool: EnginePool,
        settings: Settings,
        counters: DispatcherCounters,
        documents: Documents,
        *,
        worker_id: str,
        start_job: Callable[[asyncio.Future[Engine], ClaimedJob], None],
        give_back: Callable[[list[str]], Awaitable[None]],
        leases_kept: Callable[[], bool],
    ):
        self._db = transactions
        self._pool = pool
        self._settings = settings
        self._counters = counters
        self._documents = documents
        self._worker_id = worker_id
        self._start_job = start_job
        self._give_back = give_back
        self._leases_kept = leases_kept
        self._wake = asyncio.Event()
        # Claimed jobs still waiting for an engine, how long one may wait, and until when
        # (monotonic) no job is claimed ahead, since the last one waited in vain.
        self._waiting = 0
        self._ahead_wait_s = settings.lease_s / 3
        self._no_ahead_until = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="claim")

    def notify(self) -> None:
        """Jobs may be queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Claim no more; a claim in flight is finished and what it took given back."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        settings = self._settings
        while not self._stopping:
            ahead = AHEAD
            if (
                self._pool.contended and not self._queue_turn()
            ) or time.monotonic() < self._no_ahead_until:
                ahead = 0
            limit = self._pool.idle + ahead - self._waiting
            self._wake.clear()
            if limit < 1:
                # Every engine is busy (and the next job waits for the first free): a job that
                # ends, or the one ahead getting its engine, notifies.
                await self._sleep(settings.poll_interval_s)
                continue
            if not self._leases_kept():
                # The heartbeat is stuck: the engines wait for it (or serve synchronous reads)
                # rather than take jobs whose leases would run out and be read again.
                await asyncio.sleep(settings.poll_interval_s)
                continue
            # Shielded: a claim the database commits must reach us, even during a stop.
            claiming = asyncio.ensure_future(
                self._db.run(functools.partial(self._claim, limit=limit))
            )
            try:
                jobs, taken, reused = await asyncio.shield(claiming)
            except asyncio.CancelledError:
                await self._give_back_claim(claiming)
                raise
            except Exception as exc:  # noqa: BLE001 - database down: wait and poll again
                self._db.count_error()
                log.warning("could not claim jobs (%s: %s)", type(exc).__name__, exc)
                await self._sleep(max(DB_RETRY_S, settings.poll_interval_s))
                continue
            self._counters.reused.inc(taken - len(jobs))
            if jobs and not self._leases_kept():
                # Sent before the heartbeat got stuck, answered after (both waited out a
                # partition): these leases would run out as well; given back uncharged, uncounted.
                await self._give_back([job.id for job in jobs])
                jobs = []
            for job in jobs:
                self._start_job(self._engine(), job)
            if reused and not settings.keep_images:
                await self._documents.release(reused)
            if taken < limit:
                # The queue is empty: wait for a notify or the next poll.
                self._pool.queue_found_empty()
                await self._sleep(settings.poll_interval_s)

    def _queue_turn(self) -> bool:
        """Whether a job held ahead gets the queue's turn against synchronous reads (not while
        further pages of a document being read wait: those take it, and the job would wait
        behind them)."""
        return self._pool.queue_turn_due and not self._pool.waiting_pages

    def _engine(self) -> asyncio.Future[Engine]:
        """An engine for a job just claimed: a free one, or the first to come free."""
        free = self._pool.acquire_nowait()
        if free is not None:
            self._counters.claimed.inc()
            taken: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
            taken.set_result(free)
            return taken
        self._waiting += 1
        waiting = asyncio.ensure_future(
            asyncio.wait_for(self._pool.acquire(urgent=False), self._ahead_wait_s)
        )
        waiting.add_done_callback(self._engine_taken)
        return waiting

    def _engine_taken(self, waiting: asyncio.Future[Engine]) -> None:
        """A job's wait for an engine ended: with one (claim the next ahead), or in vain; a job
        given back for that is not counted as claimed, as none given back is."""
        self._waiting -= 1
        if not waiting.cancelled() and isinstance(waiting.exception(), TimeoutError):
            self._no_ahead_until = time.monotonic() + self._ahead_wait_s
        else:
            self._counters.claimed.inc()
        self._wake.set()

    def _claim(self, session: Session, limit: int) -> Claim:
        """Up to ``limit`` jobs to read; those answered from a stored result are finished here."""
        settings = self._settings
        jobs = job_store.claim_batch(
            session, worker_id=self._worker_id, lease_s=settings.lease_s, limit=limit
        )
        if not settings.reuse_results:
            return Claim(jobs, len(jobs), [])
        to_read: list[ClaimedJob] = []
        reused: list[JobOutcome] = []
        for job in jobs:
            known = None
            if job.digest is not None:
                # The same bytes, owner and options were read before: reuse that result.
                # Checked here rather than at intake, to keep a submit at one round trip less.
                known = job_store.find_result(
                    session, digest=job.digest, owner=job.owner, options=job.options
                )
            if known is None:
                to_read.append(job)
            else:
                pages = None if known.pages is None else list(map(pack_page, known.pages))
                reused.append(JobOutcome(job.id, known.text, pages, attempt=job.attempts))
        finished = job_store.finish_batch(
            session, worker_id=self._worker_id, outcomes=reused, keep_images=settings.keep_images
        )
        return Claim(to_read, len(jobs), finished)

    async def _give_back_claim(self, claiming: asyncio.Future[Claim]) -> None:
        """A stop cancelled a claim in flight: give back what it took, uncharged."""
        try:
            jobs = (await claiming).to_read
        except Exception:  # noqa: BLE001 - nothing was claimed
            return
        await self._give_back([job.id for job in jobs])

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
