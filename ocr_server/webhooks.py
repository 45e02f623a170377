"""The webhook sender: claims due deliveries from the outbox, POSTs each job's event, signed,
to its ``webhook_url``, and records how it went (retried on ``OCR_WEBHOOK_RETRY_SCHEDULE``).
Slow receivers cost sockets, never a thread or a moment the engines wait for."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.job_summary import iso_time, job_summary
from ocr_common.models import ClaimedDelivery, DeliveryAttempt, DeliveryStatus, JobStatus
from ocr_common.settings import Settings
from ocr_common.webhooks import AddressPolicy, logged_url, signature

from . import metrics as server_metrics
from .metrics import DispatcherCounters
from .transactions import DB_RETRY_S, Transactions

log = logging.getLogger(__name__)

# One attempt, from the name lookup to the last byte read.
ATTEMPT_TIMEOUT_S = 10.0
# What is read of a receiver's answer, at most: only its status matters.
MAX_RESPONSE_BYTES = 64 * 1024
# Each wait of the schedule is stretched or shrunk by up to this fraction, at random, so that
# deliveries that failed together (a receiver down) do not all come back at once.
JITTER = 0.2
DB_THREADS = 2
# Attempt outcomes written in one statement, at most.
MAX_RECORDS_PER_WRITE = 500
DNS_THREADS = 8
USER_AGENT = "ocr-service-webhooks/1"

# host, port, address family -> (family, address) of each address the name has.
Resolve = Callable[[str, int, int], list[tuple[int, str]]]


def system_resolve(host: str, port: int, family: int) -> list[tuple[int, str]]:
    """The system's resolver (``getaddrinfo``), as a connection would use it."""
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    return [(info[0], str(info[4][0])) for info in infos]


class AddressRefused(Exception):
    """The receiver's host is, or resolves to, an address webhooks may not reach."""


class GuardedResolver(AbstractResolver):
    """Looks a receiver's name up once and gives aiohttp only addresses the policy allows, which
    it connects to: no second lookup can send it elsewhere (DNS rebinding)."""

    def __init__(self, policy: AddressPolicy, resolve: Resolve, executor: ThreadPoolExecutor):
        self._policy = policy
        self._resolve = resolve
        self._executor = executor

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, self._resolve, host, port, family)
        allowed = self._policy.host_allowed(host)
        results: list[ResolveResult] = []
        for address_family, address in found:
            # A link-local IPv6 address may carry its interface ("fe80::1%eth0").
            ip = ipaddress.ip_address(address.partition("%")[0])
            if not allowed and (reason := self._policy.refusal(ip)) is not None:
                raise AddressRefused(f"{host} resolves to {ip}, a {reason} address")
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=address_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise OSError(f"{host} has no address")
        return results

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class Attempt:
    """How one attempt went: ``outcome`` is a metric label (a few fixed values)."""

    outcome: str  # delivered, http_error, timeout, unreachable, refused
    http_status: int | None = None
    error: str | None = None


def event_body(delivery: ClaimedDelivery) -> dict[str, Any]:
    """The event (Standard Webhooks): the job's summary, never its text, and links to the rest."""
    job = delivery.job
    links = {"job": f"/v1/jobs/{job.id}"}
    if job.status == JobStatus.SUCCEEDED:
        links["text"] = f"/v1/jobs/{job.id}?format=text"
    return {
        "type": delivery.event,
        "timestamp": iso_time(delivery.created_at),
        "data": {**job_summary(job), "links": links},
    }


class WebhookSender:
    """Sends the deliveries it claims, up to ``OCR_WEBHOOK_CONCURRENCY`` at once, on an event
    loop and thread of its own: a burst here never holds up the loop that serves the engines."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        counters: DispatcherCounters,
        *,
        resolve: Resolve = system_resolve,
        timeout_s: float = ATTEMPT_TIMEOUT_S,
        tls: ssl.SSLContext | None = None,
    ):
        self.sender_id = f"{socket.gethostname()[:40]}-webhooks-{uuid.uuid4().hex[:8]}"
        self._keys = settings.webhook_keys
        self._delays_s = settings.webhook_retry_delays_s
        self._policy = settings.webhook_policy
        self._cap = settings.webhook_concurrency
        self._poll_s = settings.poll_interval_s
        self._timeout_s = timeout_s
        # A sender that vanished mid-attempt loses the delivery this long after its claim.
        self._lease_s = settings.lease_s + timeout_s
        self._resolve = resolve
        # None: the system's certificate authorities (tests pass their own).
        self._tls = tls
        self._db_threads = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="webhook-db")
        self._dns_threads = ThreadPoolExecutor(DNS_THREADS, thread_name_prefix="webhook-dns")
        self._db = Transactions(sessions, counters, executor=self._db_threads)
        self._http: aiohttp.ClientSession | None = None
        self._records: _Records | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = threading.Event()
        self._stop: asyncio.Event | None = None
        self._grace_s = 0.0

    def start(self) -> None:
        if not self._keys:
            log.info(
                "webhooks off: OCR_WEBHOOK_SECRET is not set (deliveries wait for a server "
                "that has it)"
            )
            return
        self._thread = threading.Thread(target=self._serve, name="webhooks", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the webhook sender stopped")

    async def stop(self, grace_s: float) -> None:
        """Claim no more; let attempts in flight end within ``grace_s`` (or their lease)."""
        if self._thread is not None:
            await asyncio.to_thread(self._running.wait, 10)
            if self._loop is not None and self._stop is not None:
                self._grace_s = grace_s
                self._loop.call_soon_threadsafe(self._stop.set)
            await asyncio.to_thread(self._thread.join, grace_s + 10)
        self._db_threads.shutdown(wait=False, cancel_futures=True)
        self._dns_threads.shutdown(wait=False, cancel_futures=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._policy, self._resolve, self._dns_threads),
            use_dns_cache=False,
            limit=self._cap,
            ssl=self._tls if self._tls is not None else True,
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            # Receivers must not see each other's cookies; nothing here reads a body.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._records = _Records(self._db, self.sender_id, within_s=self._lease_s)
        recording = asyncio.create_task(self._records.run(), name="webhook-records")
        self._running.set()
        try:
            await self._run()
            if self._in_flight:
                _, late = await asyncio.wait(set(self._in_flight), timeout=self._grace_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        finally:
            recording.cancel()
            await asyncio.gather(recording, return_exceptions=True)
            await self._http.close()

    async def _run(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            if len(self._in_flight) >= self._cap:
                stopping = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait(
                    {*self._in_flight, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                continue
            limit = self._cap - len(self._in_flight)
            claim = functools.partial(
                job_store.claim_deliveries,
                sender_id=self.sender_id,
                lease_s=self._lease_s,
                limit=limit,
            )
            try:
                claimed = await self._db.run(claim)
            except Exception as exc:  # noqa: BLE001 - database down: wait and poll again
                self._db.count_error()
                log.warning("could not claim webhook deliveries (%s: %s)", type(exc).__name__, exc)
                await self._sleep(max(DB_RETRY_S, self._poll_s))
                continue
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if len(claimed) < limit:
                await self._sleep(self._poll_s)

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        assert self._records is not None
        attempt = await self._attempt(delivery)
        status, next_attempt_at = self._verdict(delivery, attempt)
        written = await self._records.write(
            DeliveryAttempt(
                delivery.id,
                delivery.attempts,
                status,
                next_attempt_at,
                attempt.http_status,
                attempt.error,
            )
        )
        server_metrics.WEBHOOK_ATTEMPTS.labels(attempt.outcome).inc()
        if written and status != DeliveryStatus.PENDING:
            server_metrics.WEBHOOK_DELIVERIES.labels(status.value).inc()
        where = logged_url(delivery.job.webhook_url or "")
        what = f"webhook {delivery.id} ({delivery.event}, attempt {delivery.attempts}) to {where}"
        if attempt.outcome == "delivered":
            log.info("%s: delivered (HTTP %s)", what, attempt.http_status)
        elif next_attempt_at is not None:
            wait_s = (next_attempt_at - job_store.utcnow()).total_seconds()
            log.warning("%s: %s; next attempt in %.0f s", what, attempt.error, wait_s)
        else:
            log.warning("%s: %s; given up", what, attempt.error)
        if not written:
            log.warning("%s: its lease ran out and another sender took it over", what)

    def _verdict(
        self, delivery: ClaimedDelivery, attempt: Attempt
    ) -> tuple[DeliveryStatus, datetime | None]:
        """Delivered, failed for good (refused, or out of retries), or retried after a wait."""
        if attempt.outcome == "delivered":
            return DeliveryStatus.DELIVERED, None
        retry = delivery.attempts - 1
        if attempt.outcome == "refused" or retry >= len(self._delays_s):
            return DeliveryStatus.FAILED, None
        wait_s = self._delays_s[retry] * random.uniform(1 - JITTER, 1 + JITTER)
        return DeliveryStatus.PENDING, job_store.utcnow() + timedelta(seconds=wait_s)

    async def _attempt(self, delivery: ClaimedDelivery) -> Attempt:
        """POST the event once: what the receiver answered, or why it could not."""
        assert self._http is not None
        url = delivery.job.webhook_url
        assert url is not None
        # aiohttp connects to an IP literal without asking the resolver: checked here.
        refused = self._policy.literal_refusal(urlsplit(url).hostname or "")
        if refused is not None:
            return Attempt("refused", error=refused)
        body = json.dumps(event_body(delivery), separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(self._keys, delivery.id, timestamp, body),
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._http.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await _read_some(response, MAX_RESPONSE_BYTES)
                    status = response.status
        except AddressRefused as exc:
            return Attempt("refused", error=str(exc))
        except TimeoutError:
            return Attempt("timeout", error=f"no answer within {self._timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt("unreachable", error=_failure(exc, url))
        if 200 <= status < 300:
            return Attempt("delivered", status)
        return Attempt("http_error", status, f"the receiver answered HTTP {status}")


class _Records:
    """Writes how attempts went, those that end together in one transaction: a thousand
    attempts timing out at once cost the database a few transactions, not a thousand."""

    def __init__(self, transactions: Transactions, sender_id: str, within_s: float):
        self._db = transactions
        self._sender_id = sender_id
        # Past this, another sender may hold the deliveries: the write is given up.
        self._within_s = within_s
        self._pending: list[tuple[DeliveryAttempt, asyncio.Future[bool]]] = []
        self._ready = asyncio.Event()

    async def write(self, attempt: DeliveryAttempt) -> bool:
        """True once written; False if the lease was lost or the write never went through."""
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, written))
        self._ready.set()
        return await written

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch = self._pending[:MAX_RECORDS_PER_WRITE]
            del self._pending[: len(batch)]
            if self._pending:
                self._ready.set()
            record = functools.partial(
                job_store.record_attempts,
                sender_id=self._sender_id,
                attempts=[attempt for attempt, _ in batch],
            )
            written = set(await self._db.run_until_done(record, within_s=self._within_s) or ())
            for attempt, future in batch:
                if not future.done():
                    future.set_result(attempt.delivery_id in written)


async def _read_some(response: aiohttp.ClientResponse, limit: int) -> None:
    """Read at most ``limit`` bytes of the answer; past that, drop the connection."""
    remaining = limit
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            return
        remaining -= len(chunk)
    if not response.content.at_eof():
        response.close()


def _failure(exc: BaseException, url: str) -> str:
    """Why a POST failed, without the URL's credentials (nor ClientResponseError's URL)."""
    detail = exc.message if isinstance(exc, aiohttp.ClientResponseError) else exc
    text = f"{type(exc).__name__}: {detail}"
    parts = urlsplit(url)
    for secret in (parts.password, parts.username):
        if secret:
            text = text.replace(secret, "***")
    return text
