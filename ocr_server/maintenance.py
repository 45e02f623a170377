"""The maintenance loop: jobs whose lease expired go back to the queue, old results go, and
files no job holds are swept from the blob store."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.settings import Settings

from .documents import BlobSweep, Documents
from .metrics import DispatcherCounters
from .transactions import Transactions

log = logging.getLogger(__name__)


# The blob store's sweep runs at most this often on each OCR server (one LIST call a round).
SWEEP_INTERVAL_S = 60.0


async def maintain(
    transactions: Transactions,
    settings: Settings,
    counters: DispatcherCounters,
    on_requeued: Callable[[], None],
    documents: Documents,
) -> None:
    """Forever: re-queue (or fail) jobs whose lease expired, purge jobs older than
    ``OCR_RESULT_TTL_DAYS``, sweep files no job holds; ``on_requeued`` when jobs came back."""
    interval_s = max(settings.poll_interval_s, settings.lease_s / 2)
    ttl_days = settings.result_ttl_days
    sweeper = BlobSweep(documents, transactions, settings.blob_grace_s)
    sweep_every_s = min(SWEEP_INTERVAL_S, settings.blob_grace_s)
    next_sweep = time.monotonic()

    reap = functools.partial(job_store.requeue_expired, keep_images=settings.keep_images)

    def purge(session: Session) -> tuple[int, list[str]]:
        cut_off = job_store.utcnow() - timedelta(days=ttl_days)
        return job_store.purge_finished(session, finished_before=cut_off)

    while True:
        try:
            requeued, failed = await transactions.run(reap)
        except Exception as exc:  # noqa: BLE001 - next round tries again
            log.warning("reaper failed: %s", exc)
        else:
            if requeued or failed:
                log.info("reaper: %d job(s) re-queued, %d failed", requeued, failed)
                counters.requeued_by_reaper.inc(requeued)
                counters.failed_by_reaper.inc(failed)
                if requeued:
                    on_requeued()
        if ttl_days:
            try:
                purged, with_files = await transactions.run(purge)
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.warning("purge failed: %s", exc)
            else:
                await documents.remove(with_files)
                if purged:
                    log.info("purged %d job(s) older than %g day(s)", purged, ttl_days)
                    counters.purged.inc(purged)
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + sweep_every_s
            try:
                counters.swept_files.inc(await sweeper.sweep())
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.warning("blob sweep failed: %s", exc)
        await asyncio.sleep(interval_s)
