"""How many POST /image and GET /image a second the API server answers, and how fast.

Three measurements on a scratch MySQL/MariaDB database, with the real services (ocr-migrate,
ocr-server, ocr-api as separate processes, started by ocr_testkit/stack.py):

A. The OCR server stopped: POST /image of a small image (a few lines, one of 64 distinct
   renderings), then GET /image of finished tasks (marked done directly in the database), each
   at 1, 8 and 32 concurrent keep-alive clients for a fixed time: req/s, p50/p99 latency, errors,
   and the CPU the API server, MariaDB and this load generator spent per request.
B. The OCR server running flat out on a backlog of full pages (40 lines each, about a core-second
   of Tesseract): GET /image at 8 clients while the engines keep the cores busy, flat out and
   then paced (--busy-rate, a poller's pace that leaves the cores to Tesseract); the OCR column
   says how many cores the OCR server really got. Target: GET p99 <= 50 ms.
C. The OCR server's own finishing rate for the small image (distinct images, so no stored result
   is reused), from the jobs' started_at/finished_at; and the ratio of the best POST rate to it.
   Target: >= 20x.

    .venv/bin/python bench/intake.py \
        --database-url mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test \
        --seconds 10 --concurrency 1 8 32

The load generator is one asyncio loop in this process (aiohttp, one keep-alive connection per
client, request bodies encoded in advance); it shares the machine's cores with the services, so
its own CPU is reported beside the results, and so is the CPU of the rest of the machine
("other", in cores): on a shared machine a run where it is not near 0 measured the neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ocr_common import job_store
from ocr_common.blobs import JobFiles
from ocr_common.db import make_engine, make_session_factory
from ocr_common.migrate import upgrade
from ocr_testkit.database import claim_next, finish, scratch_database
from ocr_testkit.pages import render_lines
from ocr_testkit.stack import Stack, group_members

DEFAULT_URL = "mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test"
SMALL_VARIANTS = 64
BIG_VARIANTS = 8
BIG_LINES = 40
BENCH_WORKER = "bench-intake"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT_S = 30.0
OTHER = "other"  # CPU of the rest of the machine, in cores


# -- images and bodies ---------------------------------------------------------------------


def small_image(n: int) -> bytes:
    """A few lines, as a receipt photo's worth of text: about 7 KB of PNG."""
    return render_lines([f"Invoice {n:06d} paid in full", "The quick brown fox 42"])


def big_page(n: int) -> bytes:
    """A full page: 40 lines, about a core-second of Tesseract."""
    words = "the quick brown fox jumps over the lazy dog"
    return render_lines(
        [f"page {n} line {i} {words} {n * 1000 + i}" for i in range(BIG_LINES)], width=1700
    )


def post_body(image: bytes) -> bytes:
    return json.dumps({"image_data": base64.b64encode(image).decode("ascii")}).encode()


def get_body(task_id: str) -> bytes:
    return json.dumps({"task_id": task_id}).encode()


# -- CPU accounting from /proc -------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (processes that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores) so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def mariadb_pids() -> list[int]:
    """The local database server's process, if it runs here (read only, for its CPU)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.joinpath("comm").read_text().strip() in ("mariadbd", "mysqld"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@dataclass
class CpuMeter:
    """CPU seconds spent by named groups of processes between ``start`` and ``stop``."""

    groups: dict[str, Callable[[], list[int]]]
    used: dict[str, float] = field(default_factory=dict)
    _pids: dict[str, list[int]] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        for name, pids in self.groups.items():
            self._pids[name] = pids()
            self._before[name] = cpu_seconds(self._pids[name])
        self._before[OTHER] = machine_cpu_seconds()

    def stop(self) -> dict[str, float]:
        self.used = {
            name: cpu_seconds(self._pids[name]) - self._before[name] for name in self.groups
        }
        # Everything else on the machine: other tenants, the OCR server while stopped...
        machine = machine_cpu_seconds() - self._before[OTHER]
        self.used[OTHER] = max(0.0, machine - sum(self.used.values()))
        return self.used


# -- load generator ------------------------------------------------------------------------


@dataclass
class LoadResult:
    clients: int
    rate_limit: float
    elapsed_s: float
    latencies_s: list[float]
    errors: Counter[str]
    cpu: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.clients}" + (f" @{self.rate_limit:g}/s" if self.rate_limit else "")

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return math.nan
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    def cpu_ms_per_request(self, group: str) -> float:
        return 1000 * self.cpu.get(group, math.nan) / self.ok if self.ok else math.nan

    def cores(self, group: str) -> float:
        return self.cpu.get(group, math.nan) / self.elapsed_s if self.elapsed_s else math.nan


async def _load(
    method: str,
    url: str,
    bodies: Sequence[bytes],
    clients: int,
    seconds: float,
    warmup_s: float,
    rate_limit: float = 0.0,
) -> tuple[float, list[float], Counter[str]]:
    """``clients`` loops each sending one request at a time for ``warmup_s + seconds``; only
    requests that start after the warm-up count. With ``rate_limit`` (requests a second, all
    clients together) each client sends on a fixed schedule instead of at once: a poller's
    pace rather than a flood."""
    connector = aiohttp.TCPConnector(limit=clients, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    clock = time.perf_counter
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as s:
        begin = clock()
        measure_from = begin + warmup_s
        stop_at = measure_from + seconds
        last_done = [measure_from]

        async def client(k: int) -> None:
            i = k
            interval = clients / rate_limit if rate_limit else 0.0
            next_at = begin + k * interval / clients
            while True:
                if interval:
                    await asyncio.sleep(max(0.0, next_at - clock()))
                    next_at += interval
                started = clock()
                if started >= stop_at:
                    return
                body = bodies[i % len(bodies)]
                i += clients
                try:
                    async with s.request(method, url, data=body) as response:
                        await response.read()
                        outcome = "" if response.status == 200 else str(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                done = clock()
                if started >= measure_from:
                    last_done[0] = done
                    if outcome:
                        errors[outcome] += 1
                    else:
                        latencies.append(done - started)

        await asyncio.gather(*(client(k) for k in range(clients)))
    return last_done[0] - measure_from, latencies, errors


def run_load(
    method: str,
    url: str,
    bodies: Sequence[bytes],
    clients: int,
    seconds: float,
    warmup_s: float,
    meter: CpuMeter,
    rate_limit: float = 0.0,
) -> LoadResult:
    # The CPU meter runs over the warm-up too; scale it to the measured part.
    meter.start()
    began = time.perf_counter()
    elapsed, latencies, errors = asyncio.run(
        _load(method, url, bodies, clients, seconds, warmup_s, rate_limit)
    )
    wall = time.perf_counter() - began
    used = meter.stop()
    share = elapsed / wall if wall > 0 else 0.0
    return LoadResult(
        clients, rate_limit, elapsed, latencies, errors, {k: v * share for k, v in used.items()}
    )


def load_table(title: str, results: Sequence[LoadResult], groups: Sequence[str]) -> None:
    print(f"\n{title}")
    head = (
        f"{'clients':>9} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | "
        f"{'ok':>6} | {'errors':>10} | " + " | ".join(f"{g + ' CPU':>12}" for g in groups)
    )
    print(head)
    print("-" * len(head))
    for r in results:
        errs = ",".join(f"{k}x{v}" for k, v in r.errors.items()) or "0"
        cpu = " | ".join(
            f"{r.cpu_ms_per_request(g):>5.2f}ms/req"
            if g not in ("OCR", OTHER)
            else f"{r.cores(g):>6.2f} cores"
            for g in groups
        )
        print(
            f"{r.label:>9} | {r.rate:>7.0f} | {r.percentile_ms(0.5):>7.1f} | "
            f"{r.percentile_ms(0.99):>7.1f} | {1000 * max(r.latencies_s, default=math.nan):>7.1f}"
            f" | {r.ok:>6} | {errs:>10} | {cpu}"
        )


# -- database helpers ----------------------------------------------------------------------


def insert_jobs(
    sessions: sessionmaker[Session], files: JobFiles, images: Sequence[bytes], batch: int = 50
) -> None:
    """Queue jobs directly (as POST /image would, without the HTTP and the reuse check)."""
    for start in range(0, len(images), batch):
        documents = [files.store_document(image) for image in images[start : start + batch]]
        with sessions.begin() as session:
            for document in documents:
                job_store.create_job(session, document=document, max_attempts=3)


def mark_done(sessions: sessionmaker[Session], count: int) -> list[str]:
    """Claim and finish up to ``count`` queued jobs as a worker would; their ids."""
    ids = []
    for _ in range(count):
        with sessions.begin() as session:
            job = claim_next(session, worker_id=BENCH_WORKER, lease_s=3600)
            if job is None:
                break
            finish(session, job_id=job.id, worker_id=BENCH_WORKER, text="Invoice paid in full\n")
        ids.append(job.id)
    return ids


def delete_queued(engine: Engine, files: JobFiles) -> int:
    with engine.begin() as conn:
        ids = list(conn.execute(text("SELECT id FROM jobs WHERE status = 'queued'")).scalars())
        deleted = conn.execute(text("DELETE FROM jobs WHERE status = 'queued'")).rowcount
    files.remove_jobs(ids)
    return int(deleted)


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return job_store.count_by_status(session)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - began


# -- the benchmark -------------------------------------------------------------------------


def pids_of(service: Any) -> Callable[[], list[int]]:
    return lambda: group_members(service.pid) if service.proc is not None else []


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("OCR_TEST_DATABASE_URL", DEFAULT_URL),
        help="a MySQL/MariaDB URL; a scratch database ocr_test_bench_<random> is made beside it",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start of each run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--busy-clients", type=int, default=8, help="GET clients in phase B")
    parser.add_argument(
        "--busy-rate",
        type=float,
        default=100.0,
        help="phase B's second run: GET requests a second in all (a pace that leaves the cores "
        "to the OCR server); 0 skips it",
    )
    parser.add_argument("--workers", type=int, default=2, help="OCR_WORKERS")
    parser.add_argument("--api-processes", type=int, default=2, help="OCR_API_PROCESSES")
    parser.add_argument("--api-threads", type=int, default=8, help="OCR_API_THREADS")
    parser.add_argument("--done", type=int, default=500, help="finished tasks for GET /image")
    parser.add_argument("--finish-jobs", type=int, default=200, help="small jobs for phase C")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="full pages queued for phase B (default: enough for 3x the phase at 1 s a page)",
    )
    parser.add_argument("--log-dir", default="", help="service logs (default: a temp folder)")
    return parser.parse_args(argv)


def interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM cleans up like Ctrl-C does."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="ocr-intake-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print("$ python " + " ".join(sys.argv))
    if make_url(args.database_url).get_backend_name() not in ("mysql", "mariadb"):
        raise SystemExit("--database-url must be a MySQL/MariaDB URL (the e2e stack needs one)")
    with scratch_database(args.database_url, "ocr_test_bench") as url:
        upgrade(url)
        stack = Stack(
            url,
            log_dir,
            OCR_WORKERS=str(args.workers),
            OCR_API_PROCESSES=str(args.api_processes),
            OCR_API_THREADS=str(args.api_threads),
            # The services' own defaults, not the e2e tests' short ones.
            OCR_POLL_INTERVAL_S="1.0",
            OCR_LEASE_S="30",
            # Backlogs and finish-rate jobs repeat the same bytes: every one must be read.
            OCR_REUSE_RESULTS="false",
            # With the OCR server stopped the backlog grows past the default per-key cap
            # (10,000 queued jobs): intake is measured here, not the cap.
            OCR_MAX_QUEUED_PER_KEY="0",
        )
        try:
            stack.start()
            bench(stack, url, args)
        except BaseException:
            print(f"\nstopped early; service logs in {log_dir}", file=sys.stderr)
            raise
        finally:
            stack.stop()
    return 0


def bench(stack: Stack, url: str, args: argparse.Namespace) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    image_url = stack.url("/image")
    small = [small_image(n) for n in range(SMALL_VARIANTS)]
    posts = [post_body(image) for image in small]
    groups = {
        "API": pids_of(stack.api),
        "DB": mariadb_pids,
        "bench": lambda: [os.getpid()],
        "OCR": pids_of(stack.ocr),
    }
    print(
        f"API: {args.api_processes} gunicorn processes (asyncio worker, ApiWorker) x "
        f"{args.api_threads} threads; "
        f"OCR server: {args.workers} engines; {os.cpu_count()} CPUs; "
        f"database {make_url(url).get_backend_name()} (scratch {make_url(url).database}); "
        f"{args.seconds:g} s per run after {args.warmup:g} s warm-up"
    )
    print(
        f"small image: {len(small[0])} bytes PNG ({len(posts[0])} bytes of JSON), "
        f"{SMALL_VARIANTS} variants\nCPU columns: ms of CPU per answered request; OCR: cores the "
        "OCR server used; other: cores the rest of the machine used (noise if not ~0)"
    )

    # A: the OCR server stopped, so only the API server and the database work.
    stack.ocr.stop()
    meter = CpuMeter({k: v for k, v in groups.items() if k != "OCR"})
    shown = ["API", "DB", "bench", OTHER]
    post_results = [
        run_load("POST", image_url, posts, n, args.seconds, args.warmup, meter)
        for n in args.concurrency
    ]
    load_table("A. POST /image, OCR server stopped", post_results, shown)

    done_ids = mark_done(sessions, args.done)
    delete_queued(engine, stack.files)
    gets = [get_body(task_id) for task_id in done_ids]
    get_results = [
        run_load("GET", image_url, gets, n, args.seconds, args.warmup, meter)
        for n in args.concurrency
    ]
    load_table(
        f"A. GET /image of {len(done_ids)} done tasks (JSON body), OCR server stopped",
        get_results,
        shown,
    )

    # C: the OCR server's finishing rate for the small image (distinct bytes: nothing reused).
    finish = [small_image(10**5 + n) for n in range(args.finish_jobs)]
    insert_jobs(sessions, stack.files, finish)
    stack.start_ocr()
    wait_for(
        lambda: sum(counts(sessions)[s] for s in ("queued", "running")) == 0,
        60 + args.finish_jobs,
        f"the OCR server to finish {args.finish_jobs} small jobs",
    )
    with engine.connect() as conn:
        first, last, n_ok = conn.execute(
            text(
                "SELECT MIN(started_at), MAX(finished_at), COUNT(*) FROM jobs "
                "WHERE status = 'succeeded' AND worker_id <> :bench"
            ),
            {"bench": BENCH_WORKER},
        ).one()
    finish_rate = n_ok / (last - first).total_seconds()
    failed = counts(sessions)["failed"]

    # B: GET /image while the OCR server keeps every core busy on a backlog of full pages.
    runs = 2 if args.busy_rate else 1
    backlog = args.backlog or math.ceil(
        3 * args.workers * (runs * (args.seconds + args.warmup) + 5)
    )
    pages = [big_page(n) for n in range(BIG_VARIANTS)]
    insert_jobs(sessions, stack.files, [pages[n % BIG_VARIANTS] for n in range(backlog)], batch=20)
    wait_for(lambda: counts(sessions)["running"] >= args.workers, 60, "the engines to start pages")
    busy = [
        run_load(
            "GET",
            image_url,
            gets,
            args.busy_clients,
            args.seconds,
            args.warmup,
            CpuMeter(groups),
            rate_limit=rate,
        )
        for rate in ([0.0, args.busy_rate] if args.busy_rate else [0.0])
    ]
    left = counts(sessions)
    load_table(
        f"B. GET /image at {args.busy_clients} clients, OCR server busy on a backlog of "
        f"{backlog} full pages ({len(pages[0])} bytes, {BIG_LINES} lines)",
        busy,
        ["API", "DB", "bench", "OCR", OTHER],
    )
    if left["queued"] == 0:
        print("warning: the backlog ran out during phase B; raise --backlog")
    print(f"after phase B: {left['queued']} pages still queued, {left['running']} running")

    best = max(post_results, key=lambda r: r.rate)
    print("\nC. OCR server finishing rate, small image")
    print(
        f"{args.finish_jobs} small jobs ({failed} failed) on {args.workers} engines: "
        f"{finish_rate:.1f} jobs/s (first start to last finish)"
    )
    ratio = best.rate / finish_rate
    p99 = max(r.percentile_ms(0.99) for r in busy)
    print("\nTargets")
    print(
        f"POST rate / finish rate = {best.rate:.0f} ({best.clients} clients) / "
        f"{finish_rate:.1f} = {ratio:.1f}x  (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})"
    )
    print(
        f"GET p99 with the OCR server busy (worst of phase B) = {p99:.1f} ms  "
        f"(target <= 50 ms: {'met' if p99 <= 50 else 'NOT met'})"
    )
    engine.dispose()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
