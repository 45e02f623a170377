"""This OCR server's row in ``ocr_servers``: kept fresh while it runs, marked stopped when it
stops (the API reads the rows: why jobs wait, which languages a job may ask for)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from ocr_common import job_store, server_store

from .transactions import Transactions

log = logging.getLogger(__name__)

# Beats per OCR_STALE_WORKERS_S: a server is still alive after missing two in a row (a slow
# database, a short outage).
BEATS_PER_STALE_TIME = 3
# How long the rows of servers no longer seen are kept: they tell when the last one was seen.
ROWS_KEPT_S = 24 * 3600.0
# How often each server deletes the rows older than that.
FORGET_EVERY_S = 3600.0


class Presence:
    """Writes this server's row every ``stale_s / 3`` seconds until ``stop``."""

    def __init__(
        self,
        transactions: Transactions,
        *,
        server_id: str,
        engines: int,
        languages: tuple[str, ...],
        stale_s: float,
    ):
        self._db = transactions
        self._interval_s = stale_s / BEATS_PER_STALE_TIME
        self._stopping = asyncio.Event()
        self._beat = functools.partial(
            server_store.record_alive,
            server_id=server_id,
            host=socket.gethostname(),
            engines=engines,
            languages=languages,
            started_at=job_store.utcnow(),
        )
        self._stopped = functools.partial(server_store.record_stopped, server_id=server_id)

    async def run(self) -> None:
        """Beat until ``stop``, then say the server stopped: the API need not wait for it."""
        forget_at = 0.0
        while not self._stopping.is_set():
            await self._write(self._beat, "marking it alive")
            if time.monotonic() >= forget_at:
                # In a transaction of its own, and seldom: no lock on this server's row is
                # held while it looks at the others'.
                await self._write(self._forget_old, "deleting old rows")
                forget_at = time.monotonic() + FORGET_EVERY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
        await self._write(self._stopped, "marking it stopped")

    def stop(self) -> None:
        self._stopping.set()

    def _forget_old(self, session: Session) -> None:
        cut_off = job_store.utcnow() - timedelta(seconds=ROWS_KEPT_S)
        server_store.forget_before(session, seen_before=cut_off)

    async def _write(self, work: Callable[[Session], None], what: str) -> None:
        try:
            await self._db.run(work)
        except Exception as exc:  # noqa: BLE001 - the next beat tries again
            self._db.count_error()
            log.warning("OCR server row: %s failed: %s", what, exc)
