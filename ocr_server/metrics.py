"""The OCR server's metrics: counted where things happen, plus gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from ocr_common.metrics import LATENCY_BUCKETS, RequestMetrics, exposition, queue_registry

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


class DispatcherCounters:
    """``ocr_dispatcher_<name>_total``, in a registry of the dispatcher's own: two dispatchers
    in one process (the tests') count apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(name: str, documentation: str) -> Counter:
            return Counter(f"ocr_dispatcher_{name}", documentation, registry=self.registry)

        self.claimed = counter("claimed", "Jobs claimed from the queue")
        self.succeeded = counter("succeeded", "Jobs read and written as succeeded")
        self.failed = counter("failed", "Jobs failed for good")
        self.retried = counter("retried", "Attempts that failed and were given back to retry")
        self.lost_leases = counter(
            "lost_leases", "Jobs canceled or taken over while read: their result was not written"
        )
        self.requeued_by_reaper = counter(
            "requeued_by_reaper", "Jobs whose lease expired, put back in the queue"
        )
        self.failed_by_reaper = counter(
            "failed_by_reaper", "Jobs whose lease expired after their last attempt, failed"
        )
        self.purged = counter("purged", "Finished jobs deleted after OCR_RESULT_TTL_DAYS")
        # Documents no job holds (docs/operations.md "Blob store").
        self.swept_files = counter("swept_files", "Files the blob store sweep deleted")
        self.reused = counter("reused", "Jobs answered from a result read before")
        self.db_errors = counter("db_errors", "Database errors met (and retried)")

    def values(self) -> dict[str, int]:
        """Each counter's value, by its short name (``claimed``, ...)."""
        prefix, suffix = "ocr_dispatcher_", "_total"
        return {
            sample.name[len(prefix) : -len(suffix)]: int(sample.value)
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name.endswith(suffix)
        }


# A gauge read when scraped: its help text, and what gives its value.
Gauge = tuple[str, Callable[[], float]]


class RuntimeCollector(Collector):
    """Gauges as they are when scraped, each read from the function it was handed."""

    def __init__(self, gauges: dict[str, Gauge]):
        self._gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (documentation, read) in self._gauges.items():
            yield GaugeMetricFamily(name, documentation, value=read())


def render(
    gauges: dict[str, Gauge], counters: DispatcherCounters, sessions: sessionmaker[Session]
) -> bytes:
    runtime = CollectorRegistry(auto_describe=False)
    runtime.register(RuntimeCollector(gauges))
    return exposition([REGISTRY, counters.registry, runtime, queue_registry(sessions)])
