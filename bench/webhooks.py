"""Whether slow webhook receivers slow reading: /image-sync latency with no delivery in flight,
then with a thousand receivers that take every delivery's connection and never answer.

Both services run on a scratch MySQL/MariaDB database. The slow receivers are one TCP server
in this process that accepts every connection, reads the request and answers nothing, so each
attempt of the OCR server's sender holds its connection until its 10 s timeout. The
deliveries are written as the outbox holds them (1,000 jobs with a webhook_url, canceled); the
sender sends OCR_WEBHOOK_CONCURRENCY of them at once (the default 100, and 1,000 with
``--concurrency 1000``). The phases alternate, each reading the small image N times one after
the other; a phase with deliveries starts once the held connections reach the concurrency and
says how few and how many were held during it (a phase longer than 10 s spans the moment the
held attempts time out together and are sent again).

    python bench/webhooks.py --database-url mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test
    python bench/webhooks.py --concurrency 100 1000 --reads 30 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import SMALL_LINES, Timings  # noqa: E402
from throughput import (  # noqa: E402
    DEFAULT_DATABASE_URL,
    running_stack,
    service_settings,
    terminate_on_sigterm,
)

from ocr_common import job_store  # noqa: E402
from ocr_common.db import make_engine, make_session_factory  # noqa: E402
from ocr_testkit.database import filed_document  # noqa: E402
from ocr_testkit.pages import render_lines  # noqa: E402
from ocr_testkit.stack import Stack, free_port  # noqa: E402
from ocr_testkit.waits import poll_until  # noqa: E402

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
RECEIVERS = 1000


class SilentReceivers:
    """Accepts every connection, reads what comes, never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.held = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.held += 1
            try:
                while await reader.read(65536):
                    pass
            finally:
                self.held -= 1
                writer.close()

        self._server = self._loop.run_until_complete(
            asyncio.start_server(hold, "127.0.0.1", self.port, backlog=4096)
        )
        ready.set()
        self._loop.run_forever()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/receiver/{n}"


RECEIVERS_SERVER = SilentReceivers()


def queue_deliveries(stack: Stack, receivers: SilentReceivers, count: int) -> None:
    """``count`` ended jobs whose webhooks go to the silent receivers (one path each)."""
    engine = make_engine(stack.database_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        for n in range(count):
            # Canceled at once: its document is never read (nor stored).
            job = job_store.create_job(
                session,
                document=filed_document(b"x"),
                max_attempts=1,
                webhook_url=receivers.url(n),
            )
            job_store.cancel(session, job.id)
    engine.dispose()


def read_small(stack: Stack, image_b64: str, reads: int, held: list[int] | None = None) -> Timings:
    """``reads`` reads one after the other; ``held`` gets the connections held before each."""
    timings = Timings()
    for _ in range(reads):
        if held is not None:
            held.append(RECEIVERS_SERVER.held)

        def once() -> str:
            response = requests.post(
                stack.url("/image-sync"), json={"image_data": image_b64}, timeout=60
            )
            response.raise_for_status()
            return str(response.json()["text"])

        timings.time(once)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    terminate_on_sigterm()
    image_b64 = base64.b64encode(render_lines(SMALL_LINES)).decode()
    receivers = RECEIVERS_SERVER
    rows = []
    for concurrency in args.concurrency:
        settings = service_settings(
            2,
            OCR_WEBHOOK_SECRET=SECRET,
            OCR_WEBHOOK_ALLOW="127.0.0.1",
            OCR_WEBHOOK_CONCURRENCY=str(concurrency),
            # Each delivery is tried again at once: the connections stay held between rounds.
            OCR_WEBHOOK_RETRY_SCHEDULE=",".join(["0"] * 50),
        )
        with running_stack(args.database_url, **settings) as stack:
            read_small(stack, image_b64, 5)  # warm up
            baseline, loaded = Timings(), Timings()
            held_during: list[int] = []
            queued = False
            for _ in range(args.rounds):
                baseline.seconds += read_small(stack, image_b64, args.reads).seconds
                if not queued:
                    queue_deliveries(stack, receivers, RECEIVERS)
                    queued = True
                wanted = min(concurrency, RECEIVERS)
                if not poll_until(lambda w=wanted: receivers.held >= w * 0.95, 60, 0.05):
                    raise SystemExit(f"only {receivers.held} of {wanted} connections held")
                loaded.seconds += read_small(stack, image_b64, args.reads, held_during).seconds
                # Back to no delivery in flight: the jobs (and their deliveries) are deleted.
                engine = make_engine(stack.database_url)
                with engine.begin() as conn:
                    conn.exec_driver_sql("DELETE FROM webhook_deliveries")
                engine.dispose()
                queued = False
                poll_until(lambda: receivers.held == 0, 30, 0.1)
            rows.append(("none in flight", concurrency, "0", baseline))
            held = f"{min(held_during)}-{max(held_during)}"
            rows.append((f"{RECEIVERS} silent receivers", concurrency, held, loaded))
        time.sleep(1)
    print(f"\n/image-sync of a small image, {args.reads} reads x {args.rounds} rounds a row\n")
    print("| deliveries | OCR_WEBHOOK_CONCURRENCY | connections held | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, concurrency, held, timings in rows:
        print(f"| {label} | {concurrency} | {held} | {timings.p50_ms:.1f} | {timings.p99_ms:.1f} |")


if __name__ == "__main__":
    main()
