"""The dispatcher: claims queued jobs whenever an engine is free, and keeps their leases alive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.errors import EngineCrashed, EngineError, OcrError
from ocr_common.models import ClaimedJob, JobApi
from ocr_common.observability import request_id_scope
from ocr_common.results import combine_pages
from ocr_common.settings import Settings

from . import metrics as server_metrics
from .engine import PageTask
from .pool import Engine, EnginePool
from .retry_policy import Verdict, decide

log = logging.getLogger(__name__)
T = TypeVar("T")

# Room for the SQL and the other columns around a result in one write.
WRITE_HEADROOM_BYTES = 64 * 1024
# After a database error, wait this long before the next try.
DB_RETRY_S = 1.0


class JobWithdrawn(Exception):
    """The job being read was canceled (or its lease taken over): stop reading its pages."""


def make_worker_id() -> str:
    """Unique per OCR server process, and readable in the jobs table."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class DispatcherStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    lost_leases: int = 0
    requeued_by_reaper: int = 0
    failed_by_reaper: int = 0
    purged: int = 0
    reused: int = 0
    db_errors: int = 0
    last_error: str | None = field(default=None)


class Dispatcher:
    """Feeds queued jobs to the engine pool and writes their results back."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        pool: EnginePool,
        settings: Settings,
        worker_id: str | None = None,
        max_write_bytes: int | None = None,
    ):
        self._sessions = session_factory
        self._pool = pool
        self._settings = settings
        # The largest write the database takes (max_allowed_packet); None: no limit.
        self._max_write_bytes = max_write_bytes
        self.worker_id = worker_id or make_worker_id()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self.stats = DispatcherStats()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="claim"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._reaper_loop(), name="reaper"),
        ]

    def notify(self) -> None:
        """A new job was committed: look for it now rather than at the next poll."""
        self._wake.set()

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, let running jobs finish within ``grace_s``, give back the rest."""
        self._stopping.set()
        self._wake.set()
        claim = self._loops[0] if self._loops else None
        if claim is not None:
            claim.cancel()
            await asyncio.gather(claim, return_exceptions=True)
        running = list(self._running.values())
        if running:
            log.info("waiting up to %.0f s for %d running job(s)", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            if pending:
                unfinished = [job_id for job_id, task in self._running.items() if task in pending]
                log.warning("giving back %d unfinished job(s) to the queue", len(unfinished))
                await self._give_back(unfinished)
                for task in pending:
                    task.cancel()
        for task in self._loops[1:]:
            task.cancel()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)

    async def _give_back_claim(
        self, claiming: asyncio.Future[tuple[ClaimedJob | None, bool]]
    ) -> None:
        """A stop cancelled the claim loop while a claim was in flight: finish it and give
        back what it took, without charging the attempt."""
        try:
            job, reused = await claiming
        except Exception:  # noqa: BLE001 - nothing was claimed
            return
        if job is not None and not reused:
            await self._give_back([job.id])

    async def _give_back(self, job_ids: list[str]) -> None:
        def give_back(session: Session) -> None:
            for job_id in job_ids:
                job_store.release(
                    session, job_id=job_id, worker_id=self.worker_id, count_attempt=False
                )

        try:
            await self._db(give_back)
        except Exception as exc:  # noqa: BLE001 - the reaper re-queues them when leases expire
            log.warning("could not give jobs back (%s); their leases will expire", exc)

    # -- database ----------------------------------------------------------------------------

    async def _db(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one short transaction on a worker thread."""

        def in_transaction() -> T:
            with self._sessions.begin() as session:
                return work(session)

        return await asyncio.to_thread(in_transaction)

    async def _db_until_done(self, work: Callable[[Session], T]) -> T | None:
        """Retry ``work`` through a database outage for as long as the job's lease would last;
        None if it never went through.

        Past the lease, someone else may hold the job; and a write that fails every time (a
        result over the server's packet size, say) must not keep the job running forever.
        Giving up ends the job's task, so its heartbeat stops and the reaper re-queues it.
        """
        deadline = time.monotonic() + self._settings.lease_s
        while True:
            try:
                return await self._db(work)
            except Exception as exc:  # noqa: BLE001 - outages are expected; retried below
                self.stats.db_errors += 1
                self.stats.last_error = str(exc)[:200]
                if time.monotonic() + DB_RETRY_S > deadline:
                    log.error(
                        "giving up a result write after %.0f s: %s", self._settings.lease_s, exc
                    )
                    return None
                log.warning(
                    "database error (%s); retrying in %.0f s", type(exc).__name__, DB_RETRY_S
                )
                await asyncio.sleep(DB_RETRY_S)

    # -- loops -------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        settings = self._settings

        def claim(session: Session) -> tuple[ClaimedJob | None, bool]:
            """The next job to read, and whether it was answered already from a stored result."""
            job = job_store.claim_next(session, worker_id=self.worker_id, lease_s=settings.lease_s)
            if job is None or not settings.reuse_results or job.digest is None:
                return job, False
            if job.api != JobApi.ORIGINAL:
                # A v1 job is read again whatever was read before (see README, Known limits).
                return job, False
            # The same bytes from the same owner were read before: reuse that result. Checked
            # here rather than at intake, to keep POST /image at one round trip less.
            known = job_store.find_result(session, digest=job.digest, owner=job.owner)
            if known is None:
                return job, False
            job_store.finish(
                session,
                job_id=job.id,
                worker_id=self.worker_id,
                text=known.text,
                keep_image=settings.keep_images,
                result=known.result,
            )
            return job, True

        while not self._stopping.is_set():
            engine = await self._pool.acquire(urgent=False)
            self._wake.clear()
            if self._stopping.is_set():
                self._pool.release(engine)
                break
            # Shielded: a claim the database commits must reach us, even during a stop.
            claiming = asyncio.ensure_future(self._db(claim))
            try:
                job, reused = await asyncio.shield(claiming)
            except asyncio.CancelledError:
                await self._give_back_claim(claiming)
                self._pool.release(engine)
                raise
            except Exception as exc:  # noqa: BLE001 - database down: wait and poll again
                self._pool.release(engine)
                self.stats.db_errors += 1
                self.stats.last_error = str(exc)[:200]
                log.warning("could not claim a job (%s: %s)", type(exc).__name__, exc)
                await self._sleep(max(DB_RETRY_S, settings.poll_interval_s))
                continue
            if job is None or reused:
                self._pool.release(engine)
                if reused:
                    self.stats.reused += 1
                else:
                    await self._sleep(settings.poll_interval_s)
                continue
            self.stats.claimed += 1
            task = asyncio.create_task(self._run(engine, job), name=f"job-{job.id}")
            self._running[job.id] = task
            task.add_done_callback(self._forget(job.id))

    def _forget(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            # Only this task's entry: the job may have been claimed again meanwhile.
            if self._running.get(job_id) is task:
                del self._running[job_id]

        return forget

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _heartbeat_loop(self) -> None:
        interval_s = self._settings.lease_s / 3
        while True:
            await asyncio.sleep(interval_s)
            job_ids = list(self._running)
            if not job_ids:
                continue

            def beat(session: Session, job_ids: list[str] = job_ids) -> int:
                return job_store.heartbeat(
                    session,
                    worker_id=self.worker_id,
                    job_ids=job_ids,
                    lease_s=self._settings.lease_s,
                )

            try:
                await self._db(beat)
            except Exception as exc:  # noqa: BLE001 - next beat tries again
                log.warning("heartbeat failed: %s", exc)

    async def _reaper_loop(self) -> None:
        interval_s = max(self._settings.poll_interval_s, self._settings.lease_s / 2)

        def reap(session: Session) -> tuple[int, int]:
            return job_store.requeue_expired(session, keep_images=self._settings.keep_images)

        ttl_days = self._settings.result_ttl_days

        def purge(session: Session) -> int:
            cut_off = job_store.utcnow() - timedelta(days=ttl_days)
            return job_store.purge_finished(session, finished_before=cut_off)

        while True:
            try:
                requeued, failed = await self._db(reap)
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.warning("reaper failed: %s", exc)
            else:
                if requeued or failed:
                    log.info("reaper: %d job(s) re-queued, %d failed", requeued, failed)
                    self.stats.requeued_by_reaper += requeued
                    self.stats.failed_by_reaper += failed
                    if requeued:
                        self._wake.set()
            if ttl_days:
                try:
                    purged = await self._db(purge)
                except Exception as exc:  # noqa: BLE001 - next round tries again
                    log.warning("purge failed: %s", exc)
                else:
                    if purged:
                        log.info("purged %d job(s) older than %g day(s)", purged, ttl_days)
                        self.stats.purged += purged
            await asyncio.sleep(interval_s)

    # -- one job -----------------------------------------------------------------------------

    async def _run(self, engine: Engine, job: ClaimedJob) -> None:
        """A job under the request id that made it (its log lines carry it), timed."""
        started = time.monotonic()
        with request_id_scope(job.request_id):
            log.info("job %s: attempt %d started", job.id, job.attempts)
            await self._execute(engine, job)
            seconds = time.monotonic() - started
            log.info("job %s: attempt %d ended after %.2f s", job.id, job.attempts, seconds)
        server_metrics.JOB_SECONDS.observe(seconds)

    async def _execute(self, engine: Engine, job: ClaimedJob) -> None:
        """Read a job's pages, in parallel on as many engines as are free, and write how it
        ended."""
        task = PageTask(job.image, 0, job.options, self._settings.default_dpi)
        done = 0

        async def on_page(_page: dict[str, Any]) -> None:
            nonlocal done
            done += 1
            if done == len(job.pages):
                # The last page: the write that records the result follows at once and says
                # it (a one-page job, as every original-API job is, costs no extra write).
                return

            def record(session: Session, pages_done: int = done) -> bool:
                return job_store.progress(
                    session, job_id=job.id, worker_id=self.worker_id, pages_done=pages_done
                )

            try:
                still_ours = await self._db(record)
            except Exception as exc:  # noqa: BLE001 - progress is a hint; the result is not
                log.warning("job %s: progress not recorded (%s)", job.id, exc)
                return
            if not still_ours:
                raise JobWithdrawn(job.id)

        result: dict[str, Any] | None = None
        error: OcrError | None = None
        try:
            pages = await self._pool.recognize_pages(
                task, job.pages, urgent=False, engine=engine, on_page=on_page
            )
            result = combine_pages(pages)
        except OcrError as exc:
            error = exc
        except JobWithdrawn:
            # A late write refused by the lease guard, as a refused result is below.
            self.stats.lost_leases += 1
            log.info("job %s was canceled or taken over; its other pages are not read", job.id)
            self._wake.set()
            return
        except Exception as exc:  # noqa: BLE001 - a bug must cost an attempt, not the job
            log.exception("job %s: unexpected failure", job.id)
            error = EngineCrashed(f"unexpected failure while reading this document: {exc}")
        finally:
            self._wake.set()
        held = await self._db_until_done(
            self._outcome(job, result["text"] if result else None, error, result)
        )
        if held is False:
            self.stats.lost_leases += 1
            log.warning("job %s: canceled or lease lost; result discarded", job.id)

    def _outcome(
        self,
        job: ClaimedJob,
        text: str | None,
        error: OcrError | None,
        result: dict[str, Any] | None = None,
    ) -> Callable[[Session], bool]:
        """The write that records how a job's attempt ended."""
        keep, worker = self._settings.keep_images, self.worker_id
        if error is None and self._too_large(text, result):
            error = EngineError(
                "the result is larger than the database takes in one write "
                "(max_allowed_packet): read fewer pages at a time with pages=",
                code="result_too_large",
            )
        decision = decide(job, error)
        if decision.verdict is Verdict.FINISH:
            self.stats.succeeded += 1
            assert text is not None
            return lambda session: job_store.finish(
                session, job_id=job.id, worker_id=worker, text=text, keep_image=keep, result=result
            )
        failed = decision.error
        assert failed is not None and decision.message is not None
        code, message = failed.code, decision.message
        if decision.verdict is Verdict.RETRY:
            self.stats.retried += 1
            log.warning("job %s attempt %d failed (%s); retrying", job.id, job.attempts, code)
            return lambda session: job_store.release(
                session, job_id=job.id, worker_id=worker, error_code=code, error_message=message
            )
        self.stats.failed += 1
        return lambda session: job_store.fail(
            session,
            job_id=job.id,
            worker_id=worker,
            error_code=code,
            error_message=message,
            keep_image=keep,
        )

    def _too_large(self, text: str | None, result: dict[str, Any] | None) -> bool:
        if self._max_write_bytes is None:
            return False
        size = len((text or "").encode()) + (len(json.dumps(result)) if result else 0)
        return size + WRITE_HEADROOM_BYTES > self._max_write_bytes

    def describe(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "running": self.running_jobs, **vars(self.stats)}
