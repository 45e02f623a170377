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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

import ocr_server
from ocr_common import job_store
from ocr_common.db import make_engine, make_session_factory
from ocr_common.migrate import upgrade
from ocr_common.models import JobOutcome
from ocr_common.settings import load_settings
from ocr_server.dispatcher import Dispatcher
from ocr_server.engine import PageTask
from ocr_server.pool import EnginePool
from ocr_testkit.database import explain, keda_query, scratch_database, statements_sent

IMAGE = b"\x89PNG" + bytes(2000)  # a small image's worth of bytes
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


def queue_jobs(engine: Engine, jobs: int) -> None:
    """Remove the last run's jobs (not the finished filler) and queue ``jobs`` new ones."""
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.execute(text("DELETE FROM job_images"))
        session.execute(text("DELETE FROM jobs WHERE kind = 'async'"))
    for start in range(0, jobs, 500):
        with sessions.begin() as session:
            for n in range(start, min(start + 500, jobs)):
                # Distinct images: the dispatcher's engines tell the jobs apart by them.
                job_store.create_job(session, image=IMAGE + b"%d" % n, max_attempts=3)


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
                job = job_store.claim_next(session, worker_id=worker, lease_s=60)
            if job is None:
                return
            with sessions.begin() as session:
                job_store.finish(
                    session, job_id=job.id, worker_id=worker, text=f"the text of {job.id}\n"
                )
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
    """Reads nothing: a tiny page result at once; keeps every document it was given."""

    def __init__(self, seen: list[bytes]):
        self.seen = seen

    def recognize_page(
        self, task: PageTask, abandoned: threading.Event | None = None
    ) -> dict[str, Any]:
        self.seen.append(task.document)
        return {"page": task.page, "text": "some recognised text\n"}


def run_dispatcher(
    engine: Engine, engines: int, jobs: int
) -> tuple[float, int, int, int, int, float, float]:
    """The real Dispatcher with ``engines`` no-op engines until ``jobs`` results are written:
    (jobs/s, jobs read, duplicates, claim transactions, result transactions, client CPU s,
    database CPU s)."""
    claims: list[int] = []
    writes: list[int] = []

    def count(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The claim's UPDATE sets started_at, a result's sets finished_at.
        if statement.startswith("UPDATE jobs SET"):
            if "started_at" in statement:
                claims.append(cursor.rowcount)
            elif "finished_at" in statement:
                writes.append(cursor.rowcount)

    seen: list[bytes] = []
    settings = load_settings(lease_s=30, poll_interval_s=0.2, reuse_results=False)
    dispatcher = Dispatcher(
        make_session_factory(engine),
        EnginePool([NoOpEngine(seen) for _ in range(engines)]),
        settings,
    )

    async def until_written() -> float:
        began = time.perf_counter()
        dispatcher.start()
        try:
            while sum(writes) < jobs:
                await asyncio.sleep(0.005)
            return time.perf_counter() - began
        finally:
            await dispatcher.stop(grace_s=5)

    pid = server_pid(engine)
    event.listen(engine, "after_cursor_execute", count)
    cpu_before, db_before = time.process_time(), server_cpu_s(pid)
    try:
        elapsed = asyncio.run(until_written())
    finally:
        event.remove(engine, "after_cursor_execute", count)
    cpu, db_cpu = time.process_time() - cpu_before, server_cpu_s(pid) - db_before
    return (
        len(seen) / elapsed,
        len(seen),
        len(seen) - len(set(seen)),
        len(claims),
        len(writes),
        cpu,
        db_cpu,
    )


def dispatcher_table(engine: Engine, engine_counts: list[int], jobs: int) -> None:
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
        queue_jobs(engine, jobs)
        load = os.getloadavg()[0]
        rate, read, duplicates, claims, writes, cpu, db_cpu = run_dispatcher(engine, engines, jobs)
        print(
            f"{engines:>7} | {rate:>7.0f} | {read:>6} | {duplicates:>10} | {claims:>10} | "
            f"{writes:>11} | {1000 * cpu / read:>15.2f} | {1000 * db_cpu / read:>11.2f} | "
            f"{load:>4.1f}"
        )


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
    args = parser.parse_args()
    prefix = f"{make_url(args.database_url).database or 'ocr_bench'}_claims"
    with scratch_database(args.database_url, prefix) as url:
        upgrade(url)
        engine = make_engine(url, pool_size=max(args.claimers) + 2)
        print("$ python " + " ".join(sys.argv))
        backend = make_url(url).get_backend_name()
        if args.finished_rows:
            seconds = fill_finished(engine, args.finished_rows)
            print(f"filled {args.finished_rows} finished jobs in {seconds:.0f} s")
            if backend in ("mysql", "mariadb"):
                queue_jobs(engine, args.jobs)
                print_plans(engine)
        print(
            f"\nbackend: {backend}, {args.jobs} jobs queued per row, "
            f"{args.finished_rows} finished rows beside them"
        )
        if args.dispatcher:
            dispatcher_table(engine, args.engines, args.jobs)
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
                queue_jobs(engine, args.jobs)
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
