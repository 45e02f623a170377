"""The maintenance loop: jobs whose lease expired go back to the queue, old results go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from ocr_common import job_store
from ocr_common.settings import Settings

from .metrics import DispatcherStats
from .transactions import Transactions

log = logging.getLogger(__name__)


async def maintain(
    transactions: Transactions,
    settings: Settings,
    stats: DispatcherStats,
    on_requeued: Callable[[], None],
) -> None:
    """Forever: re-queue (or fail, once out of attempts) jobs whose lease expired, and purge
    finished jobs older than ``OCR_RESULT_TTL_DAYS``; ``on_requeued`` when jobs came back."""
    interval_s = max(settings.poll_interval_s, settings.lease_s / 2)
    ttl_days = settings.result_ttl_days

    def reap(session: Session) -> tuple[int, int]:
        return job_store.requeue_expired(session, keep_images=settings.keep_images)

    def purge(session: Session) -> int:
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
                stats.requeued_by_reaper += requeued
                stats.failed_by_reaper += failed
                if requeued:
                    on_requeued()
        if ttl_days:
            try:
                purged = await transactions.run(purge)
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.warning("purge failed: %s", exc)
            else:
                if purged:
                    log.info("purged %d job(s) older than %g day(s)", purged, ttl_days)
                    stats.purged += purged
        await asyncio.sleep(interval_s)
