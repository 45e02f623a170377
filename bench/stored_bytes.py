"""Bytes a job's row keeps of its result: its text and its pages (``page_results``).

Each page of the folder is read as a job of the original API reads it (``POST /image``: the
engine, its defaults, the model loaded once); its pages are recorded as a finished job through
the job store, and the row's ``text`` and ``page_results`` read back. It prints the median, mean
and largest bytes a job, and the same for the text alone.

    python bench/stored_bytes.py
    python bench/stored_bytes.py ../shared/data/books --database-url mysql+pymysql://...
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from throughput import DEFAULT_DATA, MAX_PIXELS, page_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--database-url", help="a database to record the jobs in (default: a new SQLite file)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    from sqlalchemy import select

    from ocr_common import job_store
    from ocr_common.db import make_engine, make_session_factory
    from ocr_common.migrate import upgrade
    from ocr_common.models import JobRow
    from ocr_common.options import ORIGINAL_API_OPTIONS
    from ocr_common.result import document_text
    from ocr_server.engine import PageTask, TesseractEngine

    folder = tempfile.TemporaryDirectory(prefix="ocr-bench-stored-")
    url = args.database_url or f"sqlite:///{folder.name}/jobs.db"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    engine = TesseractEngine(page_timeout_s=120, max_pixels=MAX_PIXELS)
    paths = page_images(args.folder)
    totals, texts = [], []
    try:
        for path in paths:
            data = path.read_bytes()
            pages = [engine.recognize_page(PageTask(data, 1, ORIGINAL_API_OPTIONS, 300))]
            with sessions.begin() as session:
                job = job_store.record_finished(
                    session,
                    image=data,
                    started_at=job_store.utcnow(),
                    text=document_text(pages),
                    pages=pages,
                )
            with sessions() as session:
                query = select(JobRow.text, JobRow.page_results).where(JobRow.id == job.id)
                text, stored = session.execute(query).one()
            texts.append(len(text.encode()))
            totals.append(texts[-1] + len(stored))
    finally:
        engine.close()
        folder.cleanup()
    print("$ python " + " ".join(sys.argv))
    print(f"{len(paths)} pages of {args.folder}; bytes a job's row keeps: text + page_results")
    print(f"{'':<22} | {'median':>7} | {'mean':>7} | {'largest':>7}")
    for name, values in (("text + page_results", totals), ("text alone", texts)):
        cells = (statistics.median(values), statistics.mean(values), max(values))
        print(f"{name:<22} | " + " | ".join(f"{value:7.0f}" for value in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
