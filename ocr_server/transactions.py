"""The dispatcher's short transactions: each on a worker thread, its database errors counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker
from tenacity import AsyncRetrying, RetryCallState, before_sleep_log, stop_before_delay, wait_fixed

from ocr_common.db import in_transaction

from .metrics import DispatcherCounters

log = logging.getLogger(__name__)
T = TypeVar("T")

# After a database error, wait this long before the next try.
DB_RETRY_S = 1.0


class Transactions:
    """Runs job-store work in one short transaction each, off the event loop."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        counters: DispatcherCounters,
        executor: Executor | None = None,
    ):
        self._sessions = sessions
        self._counters = counters
        # Threads of its own (the webhook sender's): none of them is one the dispatcher waits for.
        self._executor = executor

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one short transaction on a worker thread (``in_transaction``)."""
        if self._executor is None:
            return await asyncio.to_thread(in_transaction, self._sessions, work)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, in_transaction, self._sessions, work)

    def count_error(self) -> None:
        self._counters.db_errors.inc()

    async def run_until_done(self, work: Callable[[Session], T], within_s: float) -> T | None:
        """Retry ``work`` through a database outage for up to ``within_s`` (a job's lease: past
        it, someone else may hold the job); None if it never went through."""

        def give_up(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            log.error("giving up a write after %.0f s: %s", within_s, error)

        # Any error is tried again (tenacity's default): outages are expected.
        retrying = AsyncRetrying(
            stop=stop_before_delay(within_s),  # no try that would start past the deadline
            wait=wait_fixed(DB_RETRY_S),
            after=lambda _state: self.count_error(),
            before_sleep=before_sleep_log(log, logging.WARNING),
            retry_error_callback=give_up,
        )
        return await retrying(self.run, work)
