"""The dispatcher: reads the jobs the claim loop (``claims``) hands it and records how each
ended, with ``leases``, ``outcomes``, ``maintenance`` and ``retry_policy``."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import BlobMissing, BlobStoreError, JobFiles
from ocr_common.errors import EngineCrashed, EngineError, OcrError
from ocr_common.models import ClaimedJob, JobOutcome
from ocr_common.observability import request_id_scope
from ocr_common.result import PackedPage, document_text
from ocr_common.settings import Settings

from . import metrics as server_metrics
from .claims import ClaimLoop
from .documents import Documents
from .engine import PageTask
from .leases import Leases
from .maintenance import maintain
from .metrics import DispatcherCounters
from .outcomes import OutcomeWriter
from .pool import Engine, EnginePool
from .presence import Presence
from .retry_policy import Verdict, decide
from .transactions import DB_RETRY_S, Transactions

log = logging.getLogger(__name__)

# Room for the SQL and the other columns around a result in one write.
WRITE_HEADROOM_BYTES = 64 * 1024


class JobWithdrawn(Exception):
    """The job being read was canceled (or its lease taken over): stop reading its pages."""


class Dispatcher:
    """Feeds queued jobs to the engine pool and writes their results back."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        pool: EnginePool,
        settings: Settings,
        files: JobFiles,
        max_write_bytes: int | None = None,
    ):
        self._pool = pool
        self._settings = settings
        self._documents = Documents(files)
        # The largest write the database takes (max_allowed_packet); None: no limit.
        self._max_write_bytes = max_write_bytes
        # Unique per OCR server process, and readable in the jobs table.
        self.worker_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.counters = DispatcherCounters()
        self._db = Transactions(session_factory, self.counters)
        self._leases = Leases(self._db, worker_id=self.worker_id, lease_s=settings.lease_s)
        self._outcomes = OutcomeWriter(
            self._db,
            self._documents,
            worker_id=self.worker_id,
            keep_images=settings.keep_images,
            lease_s=settings.lease_s,
        )
        self._claims = ClaimLoop(
            self._db,
            pool,
            settings,
            self.counters,
            self._documents,
            worker_id=self.worker_id,
            start_job=self._start_job,
            give_back=self._leases.give_back,
            leases_kept=self._leases.keeping_up,
        )
        self._presence = Presence(
            self._db,
            server_id=self.worker_id,
            engines=pool.size,
            languages=pool.languages,
            stale_s=settings.stale_workers_s,
        )
        self._loops: list[asyncio.Task[None]] = []
        self._presence_loop: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._outcomes.start()
        self._claims.start()
        self._presence_loop = asyncio.create_task(self._presence.run(), name="presence")
        self._loops = [
            asyncio.create_task(self._leases.keep_alive(), name="heartbeat"),
            asyncio.create_task(
                maintain(
                    self._db, self._settings, self.counters, self._claims.notify, self._documents
                ),
                name="maintenance",
            ),
        ]

    def notify(self) -> None:
        """A new job was committed: look for it now rather than at the next poll."""
        self._claims.notify()

    @property
    def running_jobs(self) -> int:
        return len(self._leases)

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, let running jobs finish within ``grace_s``, give back the rest."""
        await self._claims.stop()
        running = self._leases.tasks()
        pending: set[asyncio.Task[None]] = set()
        if running:
            log.info("waiting up to %.0f s for %d running job(s)", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
        await self._outcomes.close()
        # And those whose result the last write could not record: else they would stay running
        # until their leases ran out, then be read again at an attempt's cost.
        unfinished = [*(self._leases.unfinished() if pending else []), *self._outcomes.unwritten]
        if unfinished:
            log.warning("giving back %d unfinished job(s) to the queue", len(unfinished))
            await self._leases.give_back(unfinished)
        if pending:
            self._pool.stop_replacing()
            for task in pending:
                task.cancel()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._documents.close()
        # Last: the server is alive until its work is done or given back.
        self._presence.stop()
        if self._presence_loop is not None:
            await self._presence_loop

    def describe(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "running": self.running_jobs, **self.counters.values()}

    # -- one job -----------------------------------------------------------------------------

    def _start_job(self, engine: asyncio.Future[Engine], job: ClaimedJob) -> None:
        self._leases.hold(job.id, asyncio.create_task(self._run(engine, job), name=f"job-{job.id}"))

    async def _run(self, engine: asyncio.Future[Engine], job: ClaimedJob) -> None:
        """A job under the request id that made it (its log lines carry it), timed."""
        started = time.monotonic()
        with request_id_scope(job.request_id):
            log.info("job %s: attempt %d started", job.id, job.attempts)
            await self._execute(engine, job)
            seconds = time.monotonic() - started
            log.info("job %s: attempt %d ended after %.2f s", job.id, job.attempts, seconds)
        server_metrics.JOB_SECONDS.observe(seconds)

    async def _execute(self, engine: asyncio.Future[Engine], job: ClaimedJob) -> None:
        """Read a job's pages, in parallel on the engines free, and record how it ended; its
        document is read while it waits for ``engine``."""
        try:
            document = await self._documents.read(job)
        except BaseException as exc:
            # No page will be read (a stop may cancel us here): the wait for an engine ends,
            # or the one it got goes back.
            engine.cancel()
            if (got := _engine_got(engine)) is not None:
                self._pool.release(got)
                self._claims.notify()
            if not isinstance(exc, (BlobMissing, BlobStoreError)):
                raise
            await self._unreadable(job, exc)
            return
        try:
            held = await engine
        except TimeoutError:
            # Claimed ahead, and no engine came free in time: back to the queue, uncharged,
            # for whichever server has one first.
            log.info("job %s: no engine free in time; given back to the queue", job.id)
            await self._leases.give_back([job.id])
            return
        except asyncio.CancelledError:
            # A stop, as the engine came: it goes back (a wait still going is cancelled with us).
            if (got := _engine_got(engine)) is not None:
                self._pool.release(got)
            raise
        task = PageTask(document, 0, job.options, self._settings.default_dpi)
        done = 0

        async def on_page(_page: PackedPage) -> None:
            nonlocal done
            done += 1
            if done == len(job.pages):
                # The last page: the write that records the result follows at once and says
                # it (a one-page job, as every original-API job is, costs no extra write).
                return

            record = functools.partial(
                job_store.progress, job_id=job.id, worker_id=self.worker_id, pages_done=done
            )
            try:
                still_ours = await self._db.run(record)
            except Exception as exc:  # noqa: BLE001 - progress is a hint; the result is not
                log.warning("job %s: progress not recorded (%s)", job.id, exc)
                return
            if not still_ours:
                raise JobWithdrawn(job.id)

        pages: list[PackedPage] | None = None
        error: OcrError | None = None
        try:
            pages = await self._pool.recognize_pages(
                task, job.pages, urgent=False, engine=held, on_page=on_page
            )
        except OcrError as exc:
            error = exc
        except JobWithdrawn:
            # A late write refused by the lease guard, as a refused result is below.
            self.counters.lost_leases.inc()
            log.info("job %s was canceled or taken over; its other pages are not read", job.id)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must cost an attempt, not the job
            log.exception("job %s: unexpected failure", job.id)
            error = EngineCrashed(f"unexpected failure while reading this document: {exc}")
        finally:
            self._claims.notify()
        if await self._record(job, pages, error) is False:
            self.counters.lost_leases.inc()
            log.warning("job %s: canceled or lease lost; result discarded", job.id)

    async def _unreadable(self, job: ClaimedJob, exc: BlobMissing | BlobStoreError) -> None:
        """A claimed job whose document is gone (it fails at once), or whose store did not
        answer (given back uncharged, after a pause, as through a database outage)."""
        if isinstance(exc, BlobMissing):
            self.counters.failed.inc()
            log.error("job %s: its document %s is missing from the blob store", job.id, exc)
            outcome = JobOutcome(
                job.id,
                error_code=job_store.DOCUMENT_MISSING,
                error_message=job_store.DOCUMENT_MISSING_MESSAGE,
                attempt=job.attempts,
            )
            await self._outcomes.write(outcome)
            return
        log.warning("job %s: the blob store did not answer (%s); giving it back", job.id, exc)
        await asyncio.sleep(DB_RETRY_S)
        message = f"the blob store did not answer: {exc}"[:1000]
        await self._release(job, "document_unavailable", message, count_attempt=False)

    async def _record(
        self, job: ClaimedJob, pages: list[PackedPage] | None, error: OcrError | None
    ) -> bool | None:
        """Write how a job's attempt ended: True, False (no longer ours) or None (not written)."""
        outcome = None
        if pages is not None:
            outcome = JobOutcome(job.id, document_text(pages), pages, attempt=job.attempts)
        if error is None and self._too_large(outcome):
            error = EngineError(
                "the result is larger than the database takes in one write "
                "(max_allowed_packet): read fewer pages at a time with pages=",
                code="result_too_large",
            )
        decision = decide(job, error)
        if decision.verdict is Verdict.FINISH:
            assert outcome is not None
            self.counters.succeeded.inc()
            return await self._outcomes.write(outcome)
        failed = decision.error
        assert failed is not None and decision.message is not None
        code, message = failed.code, decision.message
        if decision.verdict is Verdict.FAIL:
            self.counters.failed.inc()
            return await self._outcomes.write(
                JobOutcome(job.id, error_code=code, error_message=message, attempt=job.attempts)
            )
        self.counters.retried.inc()
        log.warning("job %s attempt %d failed (%s); retrying", job.id, job.attempts, code)
        return await self._release(job, code, message)

    async def _release(
        self, job: ClaimedJob, code: str, message: str, *, count_attempt: bool = True
    ) -> bool | None:
        """Put the job back in the queue (``job_store.release``), trying for up to a lease."""
        release = functools.partial(
            job_store.release,
            job_id=job.id,
            worker_id=self.worker_id,
            error_code=code,
            error_message=message,
            count_attempt=count_attempt,
        )
        held = await self._db.run_until_done(release, within_s=self._settings.lease_s)
        self._claims.notify()
        return held

    def _too_large(self, outcome: JobOutcome | None) -> bool:
        if self._max_write_bytes is None or outcome is None:
            return False
        size = len((outcome.text or "").encode()) + len(outcome.stored_pages or b"")
        return size + WRITE_HEADROOM_BYTES > self._max_write_bytes


def _engine_got(wait: asyncio.Future[Engine]) -> Engine | None:
    """The engine a job's wait has got, if it is over and got one."""
    if wait.done() and not wait.cancelled() and wait.exception() is None:
        return wait.result()
    return None
