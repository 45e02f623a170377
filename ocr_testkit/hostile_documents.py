"""Hostile and everyday documents against real processes: a PDF bomb, blank pages, an image
wider than Tesseract reads.

Each case returns a ``hostile.HostileTally`` and never asserts (see hostile.py); the tests in
test_hostile_documents.py assert that a case saw no problem, ``bench/reliability.py`` prints
its figures. While a case runs, ordinary jobs are submitted beside it (``OrdinaryJobs``), so
that the tally says whether everyone else's work kept finishing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import requests
from PIL import Image
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from ocr_common.options import OcrOptions
from ocr_testkit.database import queue_document
from ocr_testkit.hostile import HostileTally, RssSampler
from ocr_testkit.hostile_pdfs import nested_forms_pdf
from ocr_testkit.pages import b64, encode, render_document
from ocr_testkit.scenarios import (
    ANSWER_DEADLINE_S,
    call,
    marker,
    ocr_status,
    rows,
    tiny_page,
    wait_final,
)
from ocr_testkit.stack import Stack
from ocr_testkit.waits import poll_until

# An ordinary job is submitted this often while a case runs.
ORDINARY_EVERY_S = 0.5
# How long an ordinary job may take to finish while a case runs.
ORDINARY_DEADLINE_S = 20.0
# Tesseract's widest (and tallest) image, plus one.
TOO_WIDE_PX = 32_768
PDF_TYPE = {"Content-Type": "application/pdf"}
# How a bomb may end, and the setting its message must name.
LIMITS = {
    "document_too_complex": "OCR_ENGINE_MAX_MEMORY_MB",
    "engine_timeout": "OCR_RENDER_TIMEOUT_S",
}
# Over the memory ceiling is final; out of time may be the machine's load, and is tried again.
RETRIED = {"engine_timeout"}


class OrdinaryJobs:
    """Submits a small page to ``POST /image`` every ``ORDINARY_EVERY_S`` while it runs (see
    ``_watched``), and checks each reads as its own text; also checks that the OCR server's
    ``/metrics`` and the API's ``/healthz`` answer quickly throughout."""

    def __init__(self, stack: Stack, db: Engine):
        self._stack, self._db = stack, db
        self.words: dict[str, str] = {}  # job id -> a word its text must hold
        self.slow_answers: list[str] = []
        # The slowest /metrics and /healthz answers seen (seconds).
        self.slowest_s: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            word = marker("Other", n)
            answer = call(
                session,
                "POST",
                self._stack.url("/image"),
                timeout_s=ORDINARY_DEADLINE_S,
                json={"image_data": b64(tiny_page(word))},
            )
            if answer.status == 200 and isinstance(answer.body, dict):
                job_id = str(answer.body["task_id"])
                self.words[job_id] = " ".join(word.split()[:2])
            else:
                self.slow_answers.append(f"POST /image: {answer.status} {answer.body}")
            for url in (f"{self._stack.server_url}/metrics", self._stack.url("/healthz")):
                probe = call(session, "GET", url, timeout_s=ORDINARY_DEADLINE_S)
                slowest = max(self.slowest_s.get(probe.path, 0.0), probe.elapsed_s)
                self.slowest_s[probe.path] = round(slowest, 3)
                if probe.status != 200 or probe.elapsed_s > ANSWER_DEADLINE_S:
                    self.slow_answers.append(
                        f"GET {probe.path}: {probe.status} after {probe.elapsed_s:.1f} s"
                    )
            self.stop.wait(ORDINARY_EVERY_S)

    def record(self, tally: HostileTally, busy_until: datetime | None = None) -> None:
        """Whether every ordinary job finished with its own text, in time, and (when
        ``busy_until`` is given, a database time) whether some finished before it."""
        ids = list(self.words)
        finished_in_time = wait_final(self._db, ids, ORDINARY_DEADLINE_S)
        found = rows(self._db, ids)
        wrong = [
            job_id
            for job_id, row in found.items()
            if row.status != "succeeded" or self.words[job_id] not in (row.text or "")
        ]
        tally.notes["ordinary_jobs"] = len(ids)
        tally.notes["slowest_answer_s"] = self.slowest_s
        kept = bool(ids) and finished_in_time and not wrong and not self.slow_answers
        if busy_until is not None:
            meanwhile = sum(
                1
                for row in found.values()
                if row.finished_at is not None and row.finished_at < busy_until
            )
            tally.notes["ordinary_done_meanwhile"] = meanwhile
            if not meanwhile:
                tally.problem("no ordinary job finished while the case was being read")
            kept = kept and meanwhile > 0
        tally.others_kept_finishing = kept
        if not ids:
            tally.problem("no ordinary job was accepted while the case ran")
        if not finished_in_time:
            tally.problem(f"ordinary jobs did not finish within {ORDINARY_DEADLINE_S:g} s")
        for job_id in wrong[:3]:
            row = found.get(job_id)
            tally.problem(f"ordinary job {job_id}: {row and (row.status, row.text)}")
        tally.problems.extend(self.slow_answers[:5])


@contextlib.contextmanager
def _watched(stack: Stack, db: Engine, tally: HostileTally) -> Iterator[OrdinaryJobs]:
    """Peak memory and ordinary jobs around a case; ``tally.seconds`` is its duration."""
    others = OrdinaryJobs(stack, db)
    thread = threading.Thread(target=others.run, name="ordinary-jobs", daemon=True)
    with RssSampler(stack) as sampler:
        thread.start()
        try:
            yield others
        finally:
            others.stop.set()
            thread.join()
    sampler.record(tally)
    tally.done()


def engine_restarts(stack: Stack) -> int:
    return sum(int(engine["restarts"]) for engine in ocr_status(stack)["engines"])


def reaped(stack: Stack) -> int:
    dispatcher = ocr_status(stack)["dispatcher"]
    return int(dispatcher["requeued_by_reaper"]) + int(dispatcher["failed_by_reaper"])


# -- the cases -----------------------------------------------------------------------------


def pdf_bomb(stack: Stack, db: Engine) -> HostileTally:
    """A 2 KB PDF whose form XObjects draw each other ten times, eight levels deep.

    The API refuses it at upload (413 document_too_complex, nothing stored). The same bomb
    already in the queue (as an API without that check stored it, or one that got past it)
    fails as soon as an engine hits OCR_ENGINE_MAX_MEMORY_MB (document_too_complex, not tried
    again), or after OCR_MAX_ATTEMPTS if OCR_RENDER_TIMEOUT_S comes first each time
    (engine_timeout), each engine that tried it replaced; meanwhile ordinary jobs finish, and
    /metrics and /healthz answer.
    """
    max_attempts = int(stack.env.get("OCR_MAX_ATTEMPTS", "3"))
    ceiling_mb = int(stack.env.get("OCR_ENGINE_MAX_MEMORY_MB", "1536"))
    render_s = float(stack.env.get("OCR_RENDER_TIMEOUT_S", "30"))
    tally = HostileTally(
        f"PDF bomb (2 KB, forms 8 deep x 10; {ceiling_mb} MB ceiling, {render_s:g} s render)"
    )
    restarts_before, reaped_before = engine_restarts(stack), reaped(stack)
    bomb = nested_forms_pdf()
    tally.notes["bomb_bytes"] = len(bomb)
    session = requests.Session()
    before = set(rows(db))
    with _watched(stack, db, tally) as others:
        for path in ("/v1/jobs", "/v1/ocr"):
            answer = call(session, "POST", stack.url(path), data=bomb, headers=PDF_TYPE)
            tally.expect(
                (answer.status, answer.v1_code) == (413, "document_too_complex"),
                f"POST {path} of the bomb: {answer.status} {answer.v1_code}",
            )
        job_id = queue_directly(stack, db, bomb, max_attempts)
        if not wait_final(db, [job_id], 60 * max_attempts):
            tally.problem(f"the queued bomb did not end within {60 * max_attempts} s")
        # A few more ordinary jobs after the bomb, on the engines that replaced its own.
        accepted = len(others.words)
        poll_until(lambda: len(others.words) >= accepted + 2, 10 * ORDINARY_EVERY_S)
    stored = set(rows(db)) - before - set(others.words) - {job_id}
    tally.expect(not stored, f"{len(stored)} refused upload(s) of the bomb were stored")
    row = rows(db, [job_id]).get(job_id)
    others.record(tally, busy_until=row.finished_at if row else None)
    status, error_code, attempts = (
        (row.status, row.error_code, int(row.attempts)) if row else (None, None, 0)
    )
    tally.notes["bomb"] = (status, error_code, attempts)
    tally.expect(
        status == "failed"
        and error_code in LIMITS
        and (attempts == max_attempts if error_code in RETRIED else attempts >= 1),
        f"the queued bomb ended {(status, error_code, attempts)}, not failed with one of "
        f"{list(LIMITS)} (after {max_attempts} attempts for {sorted(RETRIED)})",
    )
    shown = call(session, "GET", stack.url(f"/v1/jobs/{job_id}"))
    error = shown.body.get("error") if isinstance(shown.body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    tally.expect(
        code in LIMITS and LIMITS[code] in str(error and error.get("message")),
        f"GET /v1/jobs/{job_id} says {shown.status} {error}",
    )
    restarts = engine_restarts(stack) - restarts_before
    tally.notes["engine_restarts"] = restarts
    tally.expect(restarts >= attempts, f"{restarts} engine restarts for {attempts} attempts")
    tally.expect(reaped(stack) == reaped_before, "the reaper took jobs back: leases lapsed")
    if tally.engine_peak_rss_mb is not None and tally.engine_peak_rss_mb > ceiling_mb:
        tally.problem(f"an engine reached {tally.engine_peak_rss_mb} MB, over {ceiling_mb} MB")
    return tally


def queue_directly(stack: Stack, db: Engine, document: bytes, max_attempts: int) -> str:
    """Queue a one-page PDF job as the API stores one, without the API's checks."""
    job = queue_document(
        sessionmaker(db),
        stack.files,
        document,
        max_attempts=max_attempts,
        options=OcrOptions(),
        fmt="PDF",
        pages_total=1,
    )
    return job.id


# Three pages, the middle one blank (as big as the others, nothing on it).
BLANK_MIDDLE = [["Page 1 quick brown fox"], ["", "", ""], ["Page 3 quick brown fox"]]


def blank_pages(stack: Stack, db: Engine) -> HostileTally:
    """A 3-page PDF whose middle page is blank, sync and async, and a blank image on every
    endpoint of the original API: each succeeds, the blank page with empty text and no lines.
    """
    tally = HostileTally("blank pages (3-page PDF, blank middle; blank image)")
    pdf = render_document(BLANK_MIDDLE, "PDF")
    blank_png = encode(Image.new("L", (900, 600), 255))
    session = requests.Session()
    with _watched(stack, db, tally) as others:
        now = call(session, "POST", stack.url("/v1/ocr"), data=pdf, headers=PDF_TYPE)
        _check_blank_middle(tally, "POST /v1/ocr", now)
        later = call(session, "POST", stack.url("/v1/jobs"), data=pdf, headers=PDF_TYPE)
        tally.expect(later.status == 202, f"POST /v1/jobs: {later.status} {later.body}")
        if later.status == 202:
            location = str(later.body["id"])
            wait_final(db, [location], 60)
            _check_blank_middle(
                tally, "GET /v1/jobs/{id}", call(session, "GET", stack.url(f"/v1/jobs/{location}"))
            )
        image = {"image_data": b64(blank_png)}
        sync = call(session, "POST", stack.url("/image-sync"), json=image)
        tally.expect(
            sync.status == 200 and sync.body == {"text": ""},
            f"POST /image-sync of a blank image: {sync.status} {sync.body}",
        )
        submitted = call(session, "POST", stack.url("/image"), json=image)
        tally.expect(submitted.status == 200, f"POST /image: {submitted.status}")
        if submitted.status == 200:
            task_id = str(submitted.body["task_id"])
            wait_final(db, [task_id], 60)
            got = call(session, "GET", stack.url("/image"), params={"task_id": task_id})
            tally.expect(
                # The query form also says "text" (issue 9).
                got.status == 200 and got.body == {"task_id": "", "text": ""},
                f"GET /image of a blank image: {got.status} {got.body}",
            )
        png = {"Content-Type": "image/png"}
        raw = call(session, "POST", stack.url("/v1/ocr"), data=blank_png, headers=png)
        tally.expect(
            raw.status == 200 and raw.body["pages"][0]["lines"] == [],
            f"POST /v1/ocr of a blank image: {raw.status} {raw.body}",
        )
    others.record(tally)
    return tally


def _check_blank_middle(tally: HostileTally, what: str, answer: Any) -> None:
    body = answer.body if isinstance(answer.body, dict) else {}
    pages = body.get("pages") or []
    texts = [page.get("text", "") for page in pages]
    tally.expect(
        answer.status == 200
        and body.get("status", "succeeded") == "succeeded"
        and len(pages) == 3
        and texts[0].startswith("Page 1")
        and texts[2].startswith("Page 3")
        and (texts[1], pages[1].get("lines")) == ("", []),
        f"{what}: {answer.status} {body.get('status')} {body.get('error')} {texts}",
    )


def wide_image(stack: Stack, db: Engine) -> HostileTally:
    """Images one pixel wider, or taller, than Tesseract reads: a 413 too_wide_or_tall at
    upload on every endpoint of both APIs, and nothing stored."""
    tally = HostileTally("image wider or taller than 32,767 px")
    images = {
        "wide": encode(Image.new("L", (TOO_WIDE_PX, 40), 255)),
        "tall": encode(Image.new("L", (40, TOO_WIDE_PX), 255)),
    }
    session = requests.Session()
    before = set(rows(db))
    with _watched(stack, db, tally) as others:
        for name, image in images.items():
            for method, path, kwargs in (
                ("POST", "/image-sync", {"json": {"image_data": b64(image)}}),
                ("POST", "/image", {"json": {"image_data": b64(image)}}),
                ("POST", "/v1/ocr", {"data": image, "headers": {"Content-Type": "image/png"}}),
                ("POST", "/v1/jobs", {"files": {"file": ("page.png", image)}}),
            ):
                answer = call(session, method, stack.url(path), **kwargs)
                code = answer.code or answer.v1_code
                tally.expect(
                    (answer.status, code) == (413, "too_wide_or_tall")
                    and "32767" in str(answer.body),
                    f"{method} {path} of a {name} image: {answer.status} {code}",
                )
    # The ordinary jobs submitted meanwhile are stored, of course: only they may be new.
    stored = set(rows(db)) - before - set(others.words)
    tally.expect(not stored, f"{len(stored)} refused upload(s) were stored anyway")
    others.record(tally)
    return tally
