"""Reliability figures: jobs submitted / accepted / lost / duplicated per injected fault, bad
inputs tried / answered 4xx, fuzz cases run / 5xx found.

Runs the same scenarios as the tests in test/faults, test/e2e/bad_inputs.py and
test/e2e/fuzz.py, against real processes (ocr-migrate, ocr-server, ocr-api) on a private
MariaDB server it starts for itself (never the shared one), then prints a Markdown table.

    .venv/bin/python bench/reliability.py [--load-jobs 2500] [--fuzz 300] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import Engine

from ocr_common.db import make_engine
from ocr_testkit import bad_inputs, hostile, hostile_clients, hostile_documents, scenarios
from ocr_testkit.fuzz import run_fuzz
from ocr_testkit.mariadb_server import PrivateMariaDB
from ocr_testkit.stack import Stack, running_stack

Scenario = Callable[[Stack, Engine], scenarios.FaultTally]
T = TypeVar("T")
HostileCase = Callable[[Stack, Engine], hostile.HostileTally]


def fault_runs(db: PrivateMariaDB, load_jobs: int) -> list[tuple[str, dict[str, str], Scenario]]:
    """(name, OCR_* settings of its stack, scenario) for every fault."""
    return [
        ("kill-ocr", {}, lambda s, e: scenarios.sigkill_ocr_server(s, e, jobs=20)),
        ("kill-engine", {}, lambda s, e: scenarios.sigkill_engine(s, e, jobs=16)),
        (
            "db-outage",
            {},
            lambda s, e: scenarios.database_outage(
                s, e, stop_db=lambda: db.stop(signal.SIGTERM), start_db=db.start, outage_s=10
            ),
        ),
        ("ocr-down", {}, lambda s, e: scenarios.ocr_server_down(s, e, jobs=20)),
        (
            "term-ocr-short",
            {"OCR_SHUTDOWN_GRACE_S": "1"},
            scenarios.sigterm_ocr_server_short_grace,
        ),
        (
            "term-ocr-long",
            {"OCR_SHUTDOWN_GRACE_S": "30"},
            scenarios.sigterm_ocr_server_long_grace,
        ),
        ("term-api", {}, lambda s, e: scenarios.sigterm_api(s, e, in_flight=4)),
        (
            "poison",
            {"OCR_PAGE_TIMEOUT_S": "0.3", "OCR_MAX_ATTEMPTS": "2"},
            lambda s, e: scenarios.poison(s, e, small_jobs=8),
        ),
        ("load", {}, lambda s, e: scenarios.load(s, e, jobs=load_jobs, clients=32)),
    ]


def hostile_runs() -> list[tuple[str, dict[str, str], HostileCase]]:
    """(name, OCR_* settings of its stack, case) for every hostile or everyday input."""
    return [
        ("pdf-bomb", {}, hostile_documents.pdf_bomb),
        (
            "pdf-bomb-768",
            {"OCR_ENGINE_MAX_MEMORY_MB": "768", "OCR_ENGINE_MAX_RSS_MB": "512"},
            hostile_documents.pdf_bomb,
        ),
        ("blank-pages", {}, hostile_documents.blank_pages),
        ("wide-image", {}, hostile_documents.wide_image),
        ("slow-clients", {}, lambda s, e: hostile_clients.slow_clients(s, e, connections=200)),
        ("stalled-ocr", {}, lambda s, e: hostile_clients.stalled_ocr_server(s, e, waiting=20)),
        ("scan-jpeg", {}, lambda s, e: hostile_clients.many_scan_jpegs(s, e, uploads=8)),
        ("blank-png", {}, lambda s, e: hostile_clients.blank_png_uploads(s, e, uploads=16)),
        ("batch-flood", {}, lambda s, e: hostile_clients.batch_flood(s, e, clients=8)),
        ("long-options", {}, hostile_clients.long_options),
        ("made-up-methods", {}, hostile_clients.made_up_methods),
        ("browser-tricks", {}, hostile_clients.browser_tricks),
    ]


def run_fault(
    db: PrivateMariaDB,
    log_dir: Path,
    settings: dict[str, str],
    scenario: Callable[[Stack, Engine], T],
) -> T:
    if not db.running:
        db.start()
    url = db.create_database()
    log_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        with running_stack(url, log_dir, **settings) as stack:
            return scenario(stack, engine)
    finally:
        engine.dispose()


def run_bad_inputs(api_url: str) -> tuple[int, int, list[str]]:
    """Every malformed request: (tried, answered 4xx JSON with the expected code, misses)."""
    tried, good, misses = 0, 0, []
    for case in bad_inputs.bad_inputs():
        tried += 1
        outcome = bad_inputs.send(api_url, case)
        is_4xx = outcome.status is not None and 400 <= outcome.status < 500
        if (
            is_4xx
            and outcome.json_ok
            and (outcome.status, outcome.code) == (case.status, case.code)
        ):
            good += 1
        else:
            misses.append(f"{case.name}: {outcome.status} {outcome.code} (want {case.code})")
        if not bad_inputs.healthy(api_url):
            misses.append(f"{case.name}: the API stopped answering /healthz")
    for name, send in (
        ("body over the limit (Content-Length)", bad_inputs.over_limit_with_length),
        ("body over the limit (chunked)", bad_inputs.over_limit_chunked),
    ):
        tried += 1
        status, body, _sent = send(api_url)
        code = body.get("error", {}).get("code")
        if (status, code) == (413, "request_too_large"):
            good += 1
        else:
            misses.append(f"{name}: {status} {code} (want request_too_large)")
    for name, make in bad_inputs.GOOD_IMAGES.items():
        tried += 1
        status, body = bad_inputs.read_good_image(api_url, make())
        if status == 200 and "quick" in str(body.get("text")):
            good += 1
        else:
            misses.append(f"{name}: {status} (want 200 and its text)")
    return tried, good, misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-jobs", type=int, default=2500)
    parser.add_argument("--fuzz", type=int, default=300, help="fuzz cases")
    parser.add_argument("--only", nargs="*", help="fault names to run (default: all)")
    args = parser.parse_args()
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))

    work = Path(tempfile.mkdtemp(prefix="ocr-reliability-"))
    db = PrivateMariaDB(work / "mariadb")
    known = [name for name, _, _ in (*fault_runs(db, args.load_jobs), *hostile_runs())]
    if unknown := sorted(set(args.only or ()) - set(known)):
        shutil.rmtree(work)
        parser.error(f"no fault named {', '.join(unknown)}; the faults are {', '.join(known)}")
    db.install()
    db.start()
    done = False
    tallies: list[scenarios.FaultTally] = []
    hostiles: list[hostile.HostileTally] = []
    try:
        for name, settings, scenario in fault_runs(db, args.load_jobs):
            if args.only and name not in args.only:
                continue
            started = time.monotonic()
            tally = run_fault(db, work / name, settings, scenario)
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
            tallies.append(tally)
        for name, settings, case in hostile_runs():
            if args.only and name not in args.only:
                continue
            started = time.monotonic()
            hostiles.append(run_fault(db, work / name, settings, case))
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        if not db.running:
            db.start()
        url = db.create_database()
        (work / "input").mkdir()
        with running_stack(url, work / "input") as stack:
            bad = run_bad_inputs(stack.api_url)
            fuzz = run_fuzz(stack.api_url, args.fuzz, raise_on_error=False)
        done = True
    finally:
        db.kill()
        # Its own MariaDB's data and every stack's logs: kept, and named, only when it failed.
        if done:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"database and logs kept in {work}", file=sys.stderr)

    print()
    print("| fault | submitted | accepted | lost | duplicated | failed (with reason) | seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in tallies:
        print(
            f"| {t.fault} | {t.submitted} | {t.accepted} | {t.lost} | {t.duplicated} | "
            f"{t.failed} | {t.seconds:.1f} |"
        )
    print()
    tried, good, misses = bad
    print("| input checks | tried | as expected | not |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| bad inputs (4xx JSON, stable code) + odd valid images | {tried} | {good} | "
        f"{tried - good} |"
    )
    five_xx = len(fuzz.server_errors)
    print(
        f"| fuzz cases (5xx found; non-JSON {len(fuzz.not_json)}) | {fuzz.cases} | "
        f"{fuzz.cases - five_xx} | {five_xx} |"
    )
    print()
    if hostiles:
        print(
            "| hostile input | tried | as expected | peak API RSS (MB) | peak engine RSS (MB) "
            "| other jobs kept finishing | seconds |"
        )
        print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
        for h in hostiles:
            kept = {None: "not checked", True: "yes", False: "**no**"}[h.others_kept_finishing]
            print(
                f"| {h.case} | {h.tried} | {h.as_expected} | {h.api_peak_rss_mb} | "
                f"{h.engine_peak_rss_mb} | {kept} | {h.seconds:.1f} |"
            )
        print()
        for h in hostiles:
            if h.notes:
                print(f"- {h.case}: " + "; ".join(f"{k}: {v}" for k, v in h.notes.items()))
        print()
    problems = [(t.fault, p) for t in tallies for p in t.problems]
    problems += [(h.case, p) for h in hostiles for p in h.problems]
    problems += [("bad input", m) for m in misses]
    problems += [("fuzz", e) for e in fuzz.server_errors + fuzz.not_json]
    if problems:
        print("Problems:")
        for where, problem in problems:
            print(f"- {where}: {problem}")
    for t in tallies:
        if t.notes:
            print(f"  {t.fault}: {t.notes}", file=sys.stderr)
    for h in hostiles:
        if h.notes:
            print(f"  {h.case}: {h.notes}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
