"""How many jobs per second the job store hands out to N concurrent claimers (no-op engine).

Shows that the database queue is never the bottleneck: a page costs about a core-second of
Tesseract, so a queue that cycles thousands of jobs a second keeps hundreds of cores busy.

    python bench/claims.py --database-url mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test \
        --jobs 3000 --claimers 1 4 8
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ocr_common import job_store
from ocr_common.db import make_engine, make_session_factory
from ocr_common.migrate import upgrade

IMAGE = b"\x89PNG" + bytes(2000)  # a small image's worth of bytes


def scratch_database(base_url: str) -> tuple[str, object]:
    """A fresh database beside the one in the URL (MySQL), or a temp file (SQLite)."""
    url = make_url(base_url)
    if url.get_backend_name() == "sqlite":
        path = f"/tmp/ocr-claims-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: os.remove(path)
    name = f"{url.database or 'ocr_bench'}_claims_{uuid.uuid4().hex[:8]}"
    server = create_engine(url.set(database=""), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))

    def drop() -> None:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE `{name}`"))
        server.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def run(database_url: str, jobs: int, claimers: int) -> tuple[float, int, int]:
    engine = make_engine(database_url, pool_size=claimers + 2)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        session.execute(text("DELETE FROM job_images"))
        session.execute(text("DELETE FROM jobs"))
    for start in range(0, jobs, 500):
        with sessions.begin() as session:
            for _ in range(min(500, jobs - start)):
                job_store.create_job(session, image=IMAGE, max_attempts=3)
    got: list[list[str]] = [[] for _ in range(claimers)]
    barrier = threading.Barrier(claimers + 1)

    def claimer(index: int) -> None:
        worker = f"bench-{index}"
        barrier.wait()
        while True:
            with sessions.begin() as session:
                job = job_store.claim_next(session, worker_id=worker, lease_s=60)
            if job is None:
                return
            with sessions.begin() as session:
                job_store.finish(session, job_id=job.id, worker_id=worker, text="")
            got[index].append(job.id)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [job_id for ids in got for job_id in ids]
    engine.dispose()
    return len(every) / elapsed, len(every), len(every) - len(set(every))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "OCR_TEST_DATABASE_URL", "mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test"
        ),
    )
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--claimers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    url, drop = scratch_database(args.database_url)
    try:
        upgrade(url)
        print("$ python " + " ".join(sys.argv))
        print(
            f"backend: {make_url(url).get_backend_name()}, {args.jobs} jobs per row, "
            "claim + finish in two short transactions each"
        )
        print(f"{'claimers':>8} | {'jobs/s':>8} | {'claimed':>7} | {'duplicates':>10}")
        print(f"{'-' * 8}-+-{'-' * 8}-+-{'-' * 7}-+-{'-' * 10}")
        for n in args.claimers:
            rate, claimed, duplicates = run(url, args.jobs, n)
            print(f"{n:>8} | {rate:>8.0f} | {claimed:>7} | {duplicates:>10}")
    finally:
        drop()  # type: ignore[operator]
    return 0


if __name__ == "__main__":
    sys.exit(main())
