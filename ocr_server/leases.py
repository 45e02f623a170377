"""The jobs this server holds a lease on: the task reading each, kept alive by a heartbeat."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from sqlalchemy.orm import Session

from ocr_common import job_store

from .transactions import Transactions

log = logging.getLogger(__name__)


class Leases:
    """Jobs held, each with the task reading it; the heartbeat extends them all in one write."""

    def __init__(self, transactions: Transactions, *, worker_id: str, lease_s: float):
        self._db = transactions
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._running: dict[str, asyncio.Task[None]] = {}
        # When the beat waiting for the database was sent (monotonic); None: none is.
        self._beat_sent: float | None = None

    def __len__(self) -> int:
        return len(self._running)

    def hold(self, job_id: str, task: asyncio.Task[None]) -> None:
        """``task`` reads ``job_id``: its lease is kept alive until the task ends."""
        self._running[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            # Only this task's entry: the job may have been claimed again meanwhile.
            if self._running.get(job_id) is done:
                del self._running[job_id]

        task.add_done_callback(forget)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._running.values())

    def unfinished(self) -> list[str]:
        return [job_id for job_id, task in self._running.items() if not task.done()]

    def keeping_up(self) -> bool:
        """False while a beat has waited for the database longer than the time between two."""
        # A job claimed then could lose its lease before the next beat. It happens after a
        # partition: a beat sent during it waits for TCP's backed-off retransmission (seconds)
        # or read_timeout (30 s), while a claim on a fresh connection goes through at once.
        return self._beat_sent is None or time.monotonic() - self._beat_sent < self._lease_s / 3

    async def keep_alive(self) -> None:
        """Forever: every third of a lease, extend the leases of the jobs held."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            job_ids = list(self._running)
            if not job_ids:
                continue
            beat = functools.partial(
                job_store.heartbeat,
                worker_id=self._worker_id,
                job_ids=job_ids,
                lease_s=self._lease_s,
            )
            self._beat_sent = time.monotonic()
            try:
                await self._db.run(beat)
            except Exception as exc:  # noqa: BLE001 - next beat tries again
                log.warning("heartbeat failed: %s", exc)
            finally:
                self._beat_sent = None

    async def give_back(self, job_ids: list[str]) -> None:
        """Put jobs back in the queue without charging the attempt (a stop interrupted them)."""
        if not job_ids:
            return

        def give_back(session: Session) -> None:
            for job_id in job_ids:
                job_store.release(
                    session, job_id=job_id, worker_id=self._worker_id, count_attempt=False
                )

        try:
            await self._db.run(give_back)
        except Exception as exc:  # noqa: BLE001 - the reaper re-queues them when leases expire
            log.warning("could not give jobs back (%s); their leases will expire", exc)
