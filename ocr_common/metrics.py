"""What both services' ``/metrics`` share: the queue read from the database at scrape time,
and the buckets of the request histograms."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from . import job_store

# Seconds: a health probe takes milliseconds, a 100-page synchronous PDF minutes.
LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The methods a request is counted under; any other token a client sends is "other". Every
# label value is a series of its own, kept until the process restarts: a label must never take
# a value a client makes up (a method, a raw path).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"


class RequestMetrics:
    """Requests answered by one service, by route and status, and their latency by route:
    ``route`` is the rule matched (``/v1/jobs/<job_id>``) or "unmatched", never the path sent."""

    def __init__(self, prefix: str, service: str):
        self.requests = Counter(
            f"{prefix}_requests",
            f"Requests answered by {service}, by route and status",
            ["method", "route", "status"],
        )
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            f"Time {service} took to answer a request, by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
        )

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else OTHER_METHOD
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class QueueCollector(Collector):
    """Jobs by status, counted when scraped; ``ocr_database_up 0`` while it does not answer."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("ocr_database_up", "1 when the job database answered the scrape")
        try:
            with self._sessions() as session:
                counts = job_store.count_by_status(session)
                pending = job_store.count_pending_deliveries(session)
        except Exception:  # noqa: BLE001 - metrics still answer while the database is down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("ocr_jobs", "Jobs in the database by status", labels=["status"])
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily(
            "ocr_webhook_deliveries_pending",
            "Webhook deliveries not yet delivered nor given up",
            value=pending,
        )


def exposition(registries: Iterable[CollectorRegistry]) -> bytes:
    """The text format of several registries, one after the other (no name in two)."""
    return b"".join(generate_latest(registry) for registry in registries)


def queue_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(sessions))
    return registry
