"""Latency of POST /image-sync, one request at a time, next to the raw engine on the same image.

Two images: a small one (a few text lines rendered by ocr_testkit/pages.py) and a full book page.
For each, N requests are sent one after the other to the service (ocr-api + ocr-server on
MySQL/MariaDB, OCR_REUSE_RESULTS=false so every request is really read), interleaved with the
same number of reads by ``TesseractEngine`` in this process (OMP_THREAD_LIMIT=1, model loaded
once) and by the OCR server's internal ``POST /ocr`` alone, so that a noisy machine slows all
three alike. It prints p50 and p99 of each and the overhead: service p50 - engine p50.

    python bench/latency.py --database-url mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test
    python bench/latency.py --small 5 --full 2
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from throughput import (
    DEFAULT_DATA,
    DEFAULT_DATABASE_URL,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    PAGE_TIMEOUT_S,
    read_first_page,
    running_stack,
    service_settings,
    terminate_on_sigterm,
)

from ocr_common.wire import OCR_PATH, Reading
from ocr_testkit.pages import render_lines

if TYPE_CHECKING:
    from ocr_server.engine import TesseractEngine

SMALL_LINES = [
    "Invoice 2041 for the month of March",
    "Total due: 318.40 EUR by 15 April",
    "Thank you for your business!",
]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)

    def time(self, call: Callable[[], str]) -> str:
        began = time.perf_counter()
        out = call()
        self.seconds.append(time.perf_counter() - began)
        return out

    @property
    def p50_ms(self) -> float:
        return percentile(self.seconds, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.seconds, 0.99) * 1000


@dataclass
class Case:
    label: str
    image: bytes
    reps: int
    engine: Timings = field(default_factory=Timings)
    ocr_server: Timings = field(default_factory=Timings)
    service: Timings = field(default_factory=Timings)
    api_checks: Timings = field(default_factory=Timings)
    differing: int = 0


def small_image() -> bytes:
    return bytes(render_lines(SMALL_LINES))


def default_page() -> Path | None:
    if not DEFAULT_DATA.is_dir():
        return None
    images = sorted(p for p in DEFAULT_DATA.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


def api_checks(body: bytes, max_upload_bytes: int) -> str:
    """What the API does to an upload before it calls the OCR server, in this process."""
    from api_server.uploads import decode_base64, parse_json_object
    from ocr_common.documents import check_image
    from ocr_common.job_store import image_digest

    value = parse_json_object(body)["image_data"]
    data = decode_base64(value, field="image_data", max_bytes=max_upload_bytes)
    check_image(data, max_bytes=max_upload_bytes, max_pixels=MAX_PIXELS)
    return image_digest(data)


def measure(case: Case, engine: TesseractEngine, api_url: str, server_url: str) -> None:
    """One warm-up of each (not counted), then ``reps`` rounds of the three, interleaved."""
    from ocr_common.settings import Settings

    max_upload = Settings().max_upload_bytes
    body = json.dumps({"image_data": base64.b64encode(case.image).decode("ascii")}).encode()
    # What the API sends the OCR server for a one-page read (api_server/ocr_client.py).
    ocr_body = {"document": base64.b64encode(case.image).decode("ascii"), "options": {}}
    with requests.Session() as session:

        def via_service() -> str:
            response = session.post(
                f"{api_url}/image-sync",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=300,
            )
            if response.status_code != 200:
                raise RuntimeError(f"/image-sync answered {response.status_code}: {response.text}")
            return str(response.json()["text"])

        def via_ocr_server() -> str:
            response = session.post(f"{server_url}{OCR_PATH}", json=ocr_body, timeout=300)
            if response.status_code != 200:
                raise RuntimeError(f"/ocr answered {response.status_code}: {response.text}")
            return Reading.from_wire(response.json()).text

        def via_engine() -> str:
            return read_first_page(engine, case.image)

        # Warm-up, not counted: connections, lazy imports.
        via_service(), via_ocr_server(), via_engine(), api_checks(body, max_upload)
        for _ in range(case.reps):
            served = case.service.time(via_service)
            case.ocr_server.time(via_ocr_server)
            read = case.engine.time(via_engine)
            case.api_checks.time(lambda: api_checks(body, max_upload))
            if served.encode() != read.encode():
                case.differing += 1


def print_report(cases: list[Case]) -> None:
    print()
    print(f"{'image':<28} | {'path':<46} | {'n':>3} | {'p50 ms':>8} | {'p99 ms':>8}")
    print(f"{'-' * 28}-+-{'-' * 46}-+-{'-' * 3}-+-{'-' * 8}-+-{'-' * 8}")
    for case in cases:
        rows = [
            ("raw engine, in-process", case.engine),
            ("OCR server alone: POST /ocr (base64 JSON)", case.ocr_server),
            ("service: POST /image-sync (base64 JSON)", case.service),
            ("  of which API checks, in-process (estimate)", case.api_checks),
        ]
        for index, (path, timings) in enumerate(rows):
            label = case.label if index == 0 else ""
            print(
                f"{label:<28} | {path:<46} | {len(timings.seconds):>3} | "
                f"{timings.p50_ms:8.1f} | {timings.p99_ms:8.1f}"
            )
    print()
    for case in cases:
        overhead = case.service.p50_ms - case.engine.p50_ms
        hop = case.ocr_server.p50_ms - case.engine.p50_ms
        print(
            f"{case.label}: overhead (service p50 - engine p50) = {overhead:.1f} ms "
            f"({overhead / case.engine.p50_ms * 100:.1f} % of the engine's time); "
            f"OCR server hop (/ocr p50 - engine p50) = {hop:.1f} ms; "
            f"API + database (service p50 - /ocr p50) = {overhead - hop:.1f} ms"
        )
        if case.differing:
            print(f"  the service's text differed from the engine's on {case.differing} request(s)")
        else:
            print("  the service's text was the engine's, byte for byte, on every request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--small", type=int, default=50, help="requests on the small image")
    parser.add_argument("--full", type=int, default=10, help="requests on the full page")
    parser.add_argument(
        "--page", type=Path, default=default_page(), help="the full page (default: a book page)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="engine processes (default: one per core)"
    )
    args = parser.parse_args(argv)
    if args.page is None or not args.page.is_file():
        parser.error(f"no full page at {args.page}: pass --page PATH")
    if min(args.small, args.full) < 1:
        parser.error("--small and --full must be at least 1")

    # The engine in this process reads with one thread, as each of the service's engines does.
    os.environ["OMP_THREAD_LIMIT"] = "1"
    import tesserocr

    from ocr_common.settings import available_cores
    from ocr_server.engine import TesseractEngine

    workers = args.workers or available_cores()
    terminate_on_sigterm()
    small = small_image()
    cases = [
        Case(f"small ({_size(small)}, {len(small) // 1024} KB)", small, args.small),
        Case(
            f"page {args.page.stem} ({_size(args.page.read_bytes())})",
            args.page.read_bytes(),
            args.full,
        ),
    ]

    print("$ python " + " ".join(sys.argv))
    print(
        f"{tesserocr.tesseract_version().splitlines()[0]} (tesserocr), tessdata_fast eng; "
        f"service with {workers} engine(s), OCR_REUSE_RESULTS=false; one request at a time, "
        "keep-alive, one warm-up of each not counted; with n < 100, p99 is about the maximum"
    )
    engine = TesseractEngine(page_timeout_s=PAGE_TIMEOUT_S, max_pixels=MAX_PIXELS)
    try:
        with running_stack(args.database_url, **service_settings(workers)) as stack:
            for case in cases:
                measure(case, engine, stack.api_url, stack.server_url)
    finally:
        engine.close()
    print_report(cases)
    return 0


def _size(data: bytes) -> str:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return f"{image.width}x{image.height}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: what this run started was stopped and removed", file=sys.stderr)
        sys.exit(130)
