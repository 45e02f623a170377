"""The OCR server's metrics: counted where things happen, plus gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.metrics import LATENCY_BUCKETS, RequestMetrics, exposition, queue_registry

if TYPE_CHECKING:
    from .dispatcher import Dispatcher
    from .pool import EnginePool

REQUESTS = RequestMetrics("ocr_server", "the OCR server's internal API")
PAGES = Counter(
    "ocr_pages",
    "Pages (and images) the engines read, by outcome: ok or the error code",
    ["outcome"],
)
RESTARTS = Counter(
    "ocr_engine_restarts",
    "Engine processes replaced, by cause: crash, memory_ceiling, memory_held, render_timeout, "
    "page_timeout, abandoned (a synchronous read whose caller went away or ran out of time)",
    ["cause"],
)
WEBHOOK_ATTEMPTS = Counter(
    "ocr_webhook_attempts",
    "Webhook delivery attempts, by outcome: delivered, http_error (the receiver answered "
    "other than 2xx), timeout, unreachable, refused (an address webhooks may not reach)",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "ocr_webhook_deliveries",
    "Webhook deliveries ended, by outcome: delivered, or failed (given up)",
    ["outcome"],
)
JOB_SECONDS = Histogram(
    "ocr_job_duration_seconds",
    "Time from claiming a queued job to recording how its attempt ended",
    buckets=LATENCY_BUCKETS,
)


@dataclass
class DispatcherStats:
    """The dispatcher's counters (each part counts its own), exported as ``ocr_dispatcher_*``."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    lost_leases: int = 0
    requeued_by_reaper: int = 0
    failed_by_reaper: int = 0
    purged: int = 0
    # Files the blob store sweep deleted: documents no job holds (docs/operations.md "Blob store").
    swept_files: int = 0
    reused: int = 0
    db_errors: int = 0
    last_error: str | None = None


class RuntimeCollector(Collector):
    """Engine use and the dispatcher's counters, as they are when scraped."""

    def __init__(self, pool: EnginePool, dispatcher: Dispatcher):
        self._pool, self._dispatcher = pool, dispatcher

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pool, dispatcher = self._pool, self._dispatcher
        yield GaugeMetricFamily("ocr_engines", "Engine processes in the pool", value=pool.size)
        yield GaugeMetricFamily(
            "ocr_engines_busy", "Engine processes reading a page now", value=pool.busy
        )
        yield GaugeMetricFamily(
            "ocr_sync_waiting",
            "Synchronous requests waiting for an engine",
            value=pool.waiting(True),
        )
        yield GaugeMetricFamily(
            "ocr_jobs_running", "Jobs this server holds a lease on", value=dispatcher.running_jobs
        )
        for name, value in vars(dispatcher.stats).items():
            if isinstance(value, int):
                yield CounterMetricFamily(
                    f"ocr_dispatcher_{name}", f"Dispatcher counter: {name}", value=value
                )


def render(pool: EnginePool, dispatcher: Dispatcher, sessions: sessionmaker[Session]) -> bytes:
    runtime = CollectorRegistry(auto_describe=False)
    runtime.register(RuntimeCollector(pool, dispatcher))
    return exposition([REGISTRY, runtime, queue_registry(sessions)])
