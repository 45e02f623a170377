"""Fault scenarios against real processes: each injects one fault and counts what happened.

A scenario never asserts: it returns a ``FaultTally`` (jobs submitted, accepted, lost,
duplicated) and the ``problems`` it saw, each a sentence. The tests in this folder assert that
there are none; ``bench/reliability.py`` runs the same scenarios and prints the figures.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import requests
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ocr_common.models import JobRow
from ocr_testkit.pages import b64, render_lines
from ocr_testkit.stack import Stack, group_members
from ocr_testkit.waits import poll_until

FINAL = ("succeeded", "failed")
FILLER = "The quick brown fox jumps over the lazy dog"
# How long any answer of the API may take while something is broken: no hangs.
ANSWER_DEADLINE_S = 10.0


@dataclass(kw_only=True)
class Tally:
    """What a case saw: the problems (each a sentence), figures in ``notes``, its duration."""

    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic, repr=False)

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def done(self) -> Self:
        """The tally, its ``seconds`` counted from its creation to now."""
        self.seconds = time.monotonic() - self.started
        return self


@dataclass
class FaultTally(Tally):
    """What one fault did to the jobs of one run."""

    fault: str
    submitted: int = 0
    accepted: int = 0
    lost: int = 0
    duplicated: int = 0
    failed: int = 0


# -- pages ---------------------------------------------------------------------------------


def tiny_page(marker: str) -> bytes:
    """About 10 ms of Tesseract."""
    return render_lines([marker], width=520)


def medium_page(marker: str) -> bytes:
    """About 0.7 s of Tesseract on one core."""
    return render_lines([marker, *[FILLER] * 20])


def long_page(marker: str, lines: int = 60) -> bytes:
    """About 2.3 s of Tesseract for 60 lines (and as much again per 60 more)."""
    body = [f"Line {i} of a long page with many words to read" for i in range(lines)]
    return render_lines([marker, *body], width=1800)


def marker(prefix: str, n: int) -> str:
    # Tesseract reads these words reliably; the number tells the jobs apart.
    return f"{prefix} {n} quick brown fox"


# -- the database --------------------------------------------------------------------------


def rows(engine: Engine, ids: Iterable[str] | None = None) -> dict[str, Any]:
    query = select(JobRow.__table__)
    if ids is not None:
        query = query.where(JobRow.id.in_(list(ids)))
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(query)}


def status_counts(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        result = conn.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
        return Counter({status: n for status, n in result})


def wait_final(engine: Engine, ids: Iterable[str], timeout_s: float) -> bool:
    wanted = list(ids)

    def done() -> bool:
        found = rows(engine, wanted)
        return len(found) == len(wanted) and all(r.status in FINAL for r in found.values())

    return bool(poll_until(done, timeout_s, interval_s=0.25))


def account(
    tally: FaultTally,
    engine: Engine,
    answered: list[str],
    expected_words: dict[str, str],
) -> None:
    """Count lost and duplicated jobs among the ids the API answered 200 with.

    ``expected_words``: for each accepted id, a word its text must hold (its own marker), so
    that a result written to the wrong job shows up.
    """
    counts = Counter(answered)
    tally.accepted = len(counts)
    tally.duplicated += sum(n - 1 for n in counts.values())
    found = rows(engine, counts)
    digests: Counter[str] = Counter()
    for job_id in counts:
        row = found.get(job_id)
        if row is None:
            tally.lost += 1
            tally.problem(f"accepted job {job_id} is not in the database")
            continue
        digests[row.image_sha256] += 1
        if row.status not in FINAL:
            tally.lost += 1
            tally.problem(f"job {job_id} is still {row.status} (attempts {row.attempts})")
        elif row.status == "failed":
            tally.failed += 1
            if not (row.error_code and row.error_message):
                tally.problem(f"job {job_id} failed without a reason")
        else:
            word = expected_words.get(job_id)
            if word and word not in (row.text or ""):
                tally.duplicated += 1
                tally.problem(f"job {job_id} holds a text that is not its own: {row.text!r}")
        if row.attempts > row.max_attempts:
            tally.problem(f"job {job_id} ran {row.attempts} times, over {row.max_attempts}")
    # Each accepted upload had bytes of its own: two rows with the same bytes are one job
    # stored twice.
    with engine.connect() as conn:
        stored = conn.execute(
            select(JobRow.image_sha256, func.count())
            .where(JobRow.image_sha256.in_(list(digests)))
            .group_by(JobRow.image_sha256)
        )
        for _digest, n in stored:
            if n > 1:
                tally.duplicated += n - 1
                tally.problem(f"one upload is stored {n} times")


# -- the API -------------------------------------------------------------------------------


@dataclass
class Answer:
    """One HTTP exchange as a client saw it."""

    method: str
    path: str
    started: float
    elapsed_s: float
    status: int | None  # None: no HTTP answer at all (connection refused, reset, timeout)
    body: Any = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def code(self) -> str | None:
        """The code of an error of the original API: {"error": {"code": ...}}."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    @property
    def v1_code(self) -> str | None:
        """The code of a v1 problem: {"code": ...}."""
        code = self.body.get("code") if isinstance(self.body, dict) else None
        return code if isinstance(code, str) else None


def call(
    session: requests.Session, method: str, url: str, timeout_s: float = 30, **kwargs: Any
) -> Answer:
    started = time.monotonic()
    path = "/" + url.split("/", 3)[-1]
    try:
        response = session.request(method, url, timeout=timeout_s, **kwargs)
    except requests.RequestException as exc:
        elapsed_s = time.monotonic() - started
        return Answer(method, path, started, elapsed_s, None, error=type(exc).__name__)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:300]
    return Answer(
        method,
        path,
        started,
        time.monotonic() - started,
        response.status_code,
        body,
        response.headers.get("Retry-After"),
    )


def submit_all(stack: Stack, images: list[bytes], clients: int = 8) -> list[Answer]:
    local = threading.local()

    def post(image: bytes) -> Answer:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return call(local.session, "POST", stack.url("/image"), json={"image_data": b64(image)})

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, images))


def accepted_ids(tally: FaultTally, answers: list[Answer]) -> list[str]:
    ids = []
    for answer in answers:
        tally.submitted += 1
        if answer.status == 200 and isinstance(answer.body, dict):
            ids.append(str(answer.body["task_id"]))
        elif answer.status is None or answer.status >= 500 and answer.status != 503:
            tally.problem(f"POST /image answered {answer.status} {answer.error or answer.body}")
    return ids


def key(word: str) -> str:
    """The part of a marker that tells jobs apart ("Kill 7"), as Tesseract reads it."""
    return " ".join(word.split()[:2])


def submit_marked(
    tally: FaultTally,
    stack: Stack,
    prefix: str,
    count: int,
    page: Callable[[str], bytes] = medium_page,
    clients: int = 8,
) -> tuple[list[str], dict[str, str]]:
    """Submit ``count`` pages, each with a marker of its own (``prefix`` and a number): the ids
    accepted, and for each the words its text must hold."""
    words = [marker(prefix, n) for n in range(count)]
    answers = submit_all(stack, [page(word) for word in words], clients)
    expected = {
        str(answer.body["task_id"]): key(word)
        for answer, word in zip(answers, words, strict=True)
        if answer.status == 200 and isinstance(answer.body, dict)
    }
    return accepted_ids(tally, answers), expected


def ocr_status(stack: Stack) -> dict[str, Any]:
    """The OCR server's /status: its engines, its dispatcher's counters."""
    return dict(requests.get(f"{stack.server_url}/status", timeout=10).json())


def engine_pids(stack: Stack) -> list[int | None]:
    """The engine processes' pids from the OCR server's /status (None while one restarts)."""
    return [engine["pid"] for engine in ocr_status(stack)["engines"]]


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


# -- the scenarios -------------------------------------------------------------------------


def sigkill_ocr_server(stack: Stack, engine: Engine, jobs: int = 20) -> FaultTally:
    """SIGKILL the OCR server mid-batch, start a new one: every job ends once, with its text."""
    tally = FaultTally("SIGKILL ocr-server mid-batch")
    ids, expected = submit_marked(tally, stack, "Kill", jobs)
    if not poll_until(lambda: status_counts(engine)["running"] >= 1, 30, 0.02):
        tally.problem("no job was running before the kill")
    pgid = stack.ocr.pid
    os.kill(pgid, signal.SIGKILL)
    assert stack.ocr.proc is not None
    stack.ocr.proc.wait(10)
    running = [i for i, r in rows(engine, ids).items() if r.status == "running"]
    tally.notes["running_at_kill"] = len(running)
    if not poll_until(lambda: not group_members(pgid), 15):
        tally.problem("engine processes outlived the killed OCR server by 15 s")
    stack.ocr.kill_group()
    stack.start_ocr()
    if not wait_final(engine, ids, 120):
        tally.problem("jobs did not finish within 120 s of the restart")
    account(tally, engine, ids, expected)
    return tally.done()


def sigkill_engine(stack: Stack, engine: Engine, jobs: int = 16) -> FaultTally:
    """SIGKILL one engine process mid-batch: its page is retried, a new engine replaces it."""
    tally = FaultTally("SIGKILL one engine process mid-batch")
    ids, expected = submit_marked(tally, stack, "Engine", jobs)
    before = engine_pids(stack)
    ocr_pid = stack.ocr.pid
    for pid in before:
        if pid is None or parent_pid(pid) != ocr_pid:
            tally.problem(f"engine pid {pid} from /status is not a child of ocr-server {ocr_pid}")
    # Both engines busy: the kill lands in the middle of a page.
    if not poll_until(lambda: status_counts(engine)["running"] >= 2, 30, 0.02):
        tally.problem("the engines were never both busy")
    time.sleep(0.2)
    victim = before[0]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    tally.notes["killed_pid"] = victim

    def replaced() -> list[int | None] | None:
        pids = engine_pids(stack)
        return pids if pids[0] not in (victim, None) else None

    after = poll_until(replaced, 30, 0.2)
    if not after:
        tally.problem(f"engine {victim} was not replaced within 30 s")
    else:
        tally.notes["new_pid"] = after[0]
        if after[0] is None or parent_pid(after[0]) != ocr_pid:
            tally.problem(f"the new engine {after[0]} is not a child of ocr-server")
        status = ocr_status(stack)
        if status["engines"][0]["restarts"] < 1:
            tally.problem(f"/status does not count the restart: {status['engines']}")
    if not wait_final(engine, ids, 90):
        tally.problem("jobs did not finish within 90 s of the kill")
    account(tally, engine, ids, expected)
    retried = [r for r in rows(engine, ids).values() if r.attempts > 1]
    tally.notes["retried"] = len(retried)
    if not retried:
        tally.problem("no job was retried: the kill did not interrupt a page")
    if stack.ocr.proc is None or stack.ocr.proc.poll() is not None:
        tally.problem("the OCR server died with its engine")
    return tally.done()


def ocr_server_down(stack: Stack, engine: Engine, jobs: int = 20) -> FaultTally:
    """The OCR server is stopped: /image keeps accepting, /image-sync says 503 at once."""
    tally = FaultTally("OCR server down for a while")
    code = stack.ocr.stop(signal.SIGTERM)
    if code != 0:
        tally.problem(f"ocr-server exited {code} on SIGTERM")
    ids, expected = submit_marked(tally, stack, "Down", jobs, tiny_page)
    session = requests.Session()
    for _ in range(3):
        sync = call(
            session, "POST", stack.url("/image-sync"), json={"image_data": b64(tiny_page("x 1"))}
        )
        if sync.status != 503 or not sync.retry_after or sync.elapsed_s > 5:
            tally.problem(
                f"/image-sync with the OCR server down: {sync.status} after "
                f"{sync.elapsed_s:.1f} s, Retry-After {sync.retry_after}"
            )
    time.sleep(2)
    stack.start_ocr()
    if not wait_final(engine, ids, 60):
        tally.problem("queued jobs did not finish within 60 s of the OCR server's return")
    account(tally, engine, ids, expected)
    return tally.done()


def poison(stack: Stack, engine: Engine, small_jobs: int = 8) -> FaultTally:
    """A page that times out every time fails after OCR_MAX_ATTEMPTS, the rest pass it by.

    The stack runs with a small OCR_PAGE_TIMEOUT_S (0.3 s) and OCR_MAX_ATTEMPTS=2.
    """
    tally = FaultTally("poison image (times out every time)")
    max_attempts = int(stack.env.get("OCR_MAX_ATTEMPTS", "3"))
    poison_ids, _ = submit_marked(tally, stack, "Poison", 1, long_page)
    # The poison first: the small jobs come in once an engine has taken it.
    poll_until(lambda: all(row.attempts for row in rows(engine, poison_ids).values()), 10, 0.02)
    small_ids, expected = submit_marked(tally, stack, "Small", small_jobs, tiny_page, clients=2)
    if not wait_final(engine, small_ids, 20):
        tally.problem("the small jobs behind the poison did not finish within 20 s")
    tally.notes["small_done_s"] = round(time.monotonic() - tally.started, 2)
    if not wait_final(engine, poison_ids, 60):
        tally.problem("the poison job did not end within 60 s")
    account(tally, engine, [*poison_ids, *small_ids], expected)
    for job_id in poison_ids:
        row = rows(engine, [job_id])[job_id]
        tally.notes["poison"] = (row.status, row.error_code, row.attempts)
        if (row.status, row.error_code) != ("failed", "engine_timeout"):
            tally.problem(f"the poison job ended {row.status} / {row.error_code}")
        if row.attempts != max_attempts:
            tally.problem(f"the poison job ran {row.attempts} times, not {max_attempts}")
        if "OCR_PAGE_TIMEOUT_S" not in (row.error_message or ""):
            tally.problem(f"the poison job's message does not say why: {row.error_message!r}")
        answer = call(requests.Session(), "GET", stack.url("/image"), params={"task_id": job_id})
        if answer.status != 422 or answer.code != "engine_timeout":
            tally.problem(f"GET /image of the poison job: {answer.status} {answer.body}")
    return tally.done()


def sigterm_ocr_server_short_grace(stack: Stack, engine: Engine) -> FaultTally:
    """SIGTERM with pages longer than OCR_SHUTDOWN_GRACE_S: exit 0 by the deadline, give back.

    The stack runs with a small OCR_SHUTDOWN_GRACE_S (1 s); the pages take about 7 s, longer
    than the grace plus the 5 s an engine is given to stop.
    """
    tally = FaultTally("SIGTERM ocr-server, pages longer than the grace")
    grace_s = float(stack.env["OCR_SHUTDOWN_GRACE_S"])
    ids, expected = submit_marked(tally, stack, "Term", 2, lambda word: long_page(word, lines=180))
    if not poll_until(lambda: status_counts(engine)["running"] == len(ids), 30, 0.02):
        tally.problem("the long pages never ran")
    time.sleep(0.3)
    replaced_before = stack.ocr.log_text().count("replaced (restart")
    stop_started = time.monotonic()
    code = stack.ocr.stop(signal.SIGTERM)
    stop_s = time.monotonic() - stop_started
    tally.notes["exit"] = (code, round(stop_s, 2))
    if code != 0:
        tally.problem(f"ocr-server exited {code} on SIGTERM")
    # The engines of the pages cut off are killed, not replaced by new ones just to be stopped.
    if (replaced := stack.ocr.log_text().count("replaced (restart") - replaced_before) > 0:
        tally.problem(f"{replaced} engine(s) were started again while the server stopped")
    # The grace, plus time to give the jobs back and stop the engines: not a page's time.
    if stop_s > grace_s + 2.5:
        tally.problem(
            f"ocr-server took {stop_s:.1f} s to exit after SIGTERM with "
            f"OCR_SHUTDOWN_GRACE_S={grace_s:g}"
        )
    for job_id, row in rows(engine, ids).items():
        if (row.status, row.attempts, row.worker_id) != ("queued", 0, None):
            tally.problem(
                f"job {job_id} after the stop: {row.status}, attempts {row.attempts}, "
                f"worker {row.worker_id} (want queued, 0, none)"
            )
    stack.start_ocr()
    if not wait_final(engine, ids, 60):
        tally.problem("the given-back jobs did not finish after the restart")
    account(tally, engine, ids, expected)
    for job_id, row in rows(engine, ids).items():
        if row.attempts != 1:
            tally.problem(f"job {job_id} was charged {row.attempts} attempts for one run")
    return tally.done()


def sigterm_ocr_server_long_grace(stack: Stack, engine: Engine) -> FaultTally:
    """SIGTERM with a page shorter than the grace: it finishes, then the server exits 0."""
    tally = FaultTally("SIGTERM ocr-server, page within the grace")
    ids, expected = submit_marked(tally, stack, "Grace", 1, long_page)
    if not poll_until(lambda: status_counts(engine)["running"] == 1, 30, 0.02):
        tally.problem("the page never ran")
    time.sleep(0.3)
    code = stack.ocr.stop(signal.SIGTERM)
    if code != 0:
        tally.problem(f"ocr-server exited {code} on SIGTERM")
    for job_id, row in rows(engine, ids).items():
        if (row.status, row.attempts) != ("succeeded", 1):
            tally.problem(f"job {job_id} after the stop: {row.status}, attempts {row.attempts}")
    stack.start_ocr()
    account(tally, engine, ids, expected)
    return tally.done()


def sigterm_api(stack: Stack, engine: Engine, in_flight: int = 4) -> FaultTally:
    """SIGTERM to ocr-api (gunicorn) with requests in flight: they complete, it exits 0."""
    tally = FaultTally("SIGTERM ocr-api, requests in flight")
    words = [marker("Flight", n) for n in range(in_flight)]
    # Rendered first: rendering in the threads took longer than the pause below on a busy
    # machine, and the requests were then sent after the SIGTERM, not before it.
    bodies = {word: {"image_data": b64(medium_page(word))} for word in words}

    def sync(word: str) -> Answer:
        return call(requests.Session(), "POST", stack.url("/image-sync"), json=bodies[word])

    def post(word: str) -> Answer:
        body = {"image_data": b64(tiny_page(word))}
        return call(requests.Session(), "POST", stack.url("/image"), json=body)

    with ThreadPoolExecutor(in_flight + 2) as pool:
        syncs = [pool.submit(sync, w) for w in words]
        time.sleep(0.5)  # the /image-sync requests are now waiting for the engines
        term_at = time.monotonic()
        assert stack.api.proc is not None
        stack.api.proc.send_signal(signal.SIGTERM)
        # Requests that arrive after the signal: refused or answered, never a 5xx.
        late = [pool.submit(post, marker("Late", n)) for n in range(2)]
        sync_answers = [f.result() for f in syncs]
        late_answers = [f.result() for f in late]
    try:
        code = stack.api.proc.wait(30)
    except Exception:  # noqa: BLE001 - reported below
        code = None
    tally.notes["exit"] = (code, round(time.monotonic() - term_at, 2))
    if code != 0:
        tally.problem(f"ocr-api exited {code} on SIGTERM")
    for word, answer in zip(words, sync_answers, strict=True):
        tally.submitted += 1
        text = answer.body.get("text") if isinstance(answer.body, dict) else None
        if answer.status == 200 and isinstance(text, str) and " ".join(word.split()[:2]) in text:
            tally.accepted += 1
        else:
            tally.lost += 1
            tally.problem(
                f"in-flight /image-sync got {answer.status} {answer.error or answer.body}"
            )
    late_ids = []
    for answer in late_answers:
        tally.submitted += 1
        if answer.status == 200:
            late_ids.append(answer.body["task_id"])
        elif answer.status is not None:
            tally.problem(f"a request after SIGTERM got {answer.status} {answer.body}")
    tally.notes["late_refused"] = sum(a.status is None for a in late_answers)
    stack.api.kill_group()
    stack.api.start()
    stack.api.wait_healthy(stack.api_url)
    if late_ids:
        wait_final(engine, late_ids, 30)
        found = rows(engine, late_ids)
        tally.accepted += len(found)
        tally.lost += len(late_ids) - len(found)
    return tally.done()


def database_outage(
    stack: Stack,
    engine: Engine,
    stop_db: Callable[[], None],
    start_db: Callable[[], None],
    outage_s: float = 10.0,
) -> FaultTally:
    """Stop the database for ``outage_s`` while clients keep calling: 503s, then recovery."""
    tally = FaultTally(f"database down {outage_s:g} s")
    ids_before, expected = submit_marked(tally, stack, "Before", 6)
    if not poll_until(lambda: status_counts(engine)["running"] >= 1, 30, 0.02):
        tally.problem("no job was running when the database went away")

    answers: list[Answer] = []
    posted: list[tuple[Answer, str]] = []
    stop = threading.Event()
    probe_id = ids_before[0] if ids_before else "00000000-0000-4000-8000-000000000000"

    def submitter() -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set():
            word = marker("During", n)
            answer = call(
                session, "POST", stack.url("/image"), json={"image_data": b64(tiny_page(word))}
            )
            posted.append((answer, word))
            answers.append(answer)
            n += 1
            time.sleep(0.1)

    def prober() -> None:
        session = requests.Session()
        tiny = b64(tiny_page("Probe 1 quick brown fox"))
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/image", {"params": {"task_id": probe_id}}),
            ("GET", "/allimages", {}),
            ("POST", "/image-sync", {"json": {"image_data": tiny}}),
            ("GET", "/readyz", {}),
        ]
        while not stop.is_set():
            for method, path, kwargs in calls:
                answers.append(call(session, method, stack.url(path), **kwargs))
            time.sleep(0.2)

    threads = [threading.Thread(target=submitter), threading.Thread(target=prober)]
    for thread in threads:
        thread.start()

    def wait_posts(count: int) -> None:
        """Some traffic before the outage, and some after the recovery: at the submitter's
        pace, about 0.1 s a job."""
        poll_until(lambda: len(posted) >= count, 10, 0.05)

    wait_posts(5)
    down_at = time.monotonic()
    stop_db()
    time.sleep(outage_s)
    up_at = time.monotonic()
    start_db()
    up_done = time.monotonic()
    # Reconnecting by themselves: the first good answers after the database is back (the
    # API's own readiness: whether an OCR server is alive is the OCR server's check below).
    own_readyz = stack.url("/readyz?exclude=ocr_servers")
    api_back = poll_until(
        lambda: call(requests.Session(), "GET", own_readyz, timeout_s=5).status == 200,
        30,
        0.2,
    )
    ocr_back = poll_until(
        lambda: (
            call(requests.Session(), "GET", f"{stack.server_url}/readyz", timeout_s=5).status == 200
        ),
        30,
        0.2,
    )
    tally.notes["api_ready_after_s"] = round(time.monotonic() - up_done, 2)
    if not api_back:
        tally.problem("the API's /readyz did not come back within 30 s of the database")
    if not ocr_back:
        tally.problem("the OCR server's /readyz did not come back within 30 s of the database")
    wait_posts(len(posted) + 10)
    stop.set()
    for thread in threads:
        thread.join()

    during: Counter[str] = Counter()
    # The same failure repeats with every probe: one problem per kind, with its count.
    bad: Counter[str] = Counter()
    ids_during: list[str] = []
    for answer in answers:
        ended = answer.started + answer.elapsed_s
        in_outage = answer.started > down_at + 0.5 and ended < up_at
        if answer.status is None:
            bad[f"{answer.path}: no HTTP answer ({answer.error})"] += 1
        elif answer.status >= 500 and answer.status != 503:
            bad[f"{answer.path}: {answer.status} {answer.body!r:.200}"] += 1
        if answer.elapsed_s > ANSWER_DEADLINE_S:
            bad[f"{answer.path}: answered after more than {ANSWER_DEADLINE_S:g} s"] += 1
        if in_outage:
            during[f"{answer.method} {answer.path} {answer.status}"] += 1
            if answer.status is not None and (
                answer.status != 503 or not answer.retry_after or not answer.code
            ):
                bad[
                    f"{answer.path} during the outage: {answer.status}, Retry-After "
                    f"{answer.retry_after}, body {answer.body!r:.200}"
                ] += 1
    for message, n in bad.items():
        tally.problem(f"{n} x {message}")
    tally.notes["answers_during_outage"] = dict(during)
    tally.submitted += len(posted)
    for answer, word in posted:
        if answer.status == 200 and isinstance(answer.body, dict):
            job_id = str(answer.body["task_id"])
            ids_during.append(job_id)
            expected[job_id] = key(word)
    ids_after, expected_after = submit_marked(tally, stack, "After", 4, tiny_page)
    expected.update(expected_after)
    all_ids = [*ids_before, *ids_during, *ids_after]
    if not wait_final(engine, all_ids, 90):
        tally.problem("jobs did not finish within 90 s of the database's return")
    account(tally, engine, all_ids, expected)
    tally.notes["refused_during_outage"] = sum(1 for a, _ in posted if a.status == 503)
    return tally.done()


def load(stack: Stack, engine: Engine, jobs: int = 2500, clients: int = 32) -> FaultTally:
    """Thousands of small jobs from many clients at once; the OCR server is stopped meanwhile.

    Afterwards every accepted id is in the database once, and the count of jobs is the count
    of 200 answers.
    """
    tally = FaultTally(f"load: {jobs} jobs from {clients} clients")
    if stack.ocr.proc is not None and stack.ocr.proc.poll() is None:
        stack.ocr.stop(signal.SIGTERM)
    before = sum(status_counts(engine).values())
    # Distinct bytes per job (a number drawn in a corner), rendered before the clock starts.
    base = tiny_page("Load quick brown fox")
    images = [_numbered(base, n) for n in range(jobs)]
    started = time.monotonic()
    answers = submit_all(stack, images, clients=clients)
    tally.seconds = time.monotonic() - started
    ids = accepted_ids(tally, answers)
    statuses = Counter(a.status for a in answers)
    tally.notes["statuses"] = dict(statuses)
    tally.notes["jobs_per_s"] = round(len(answers) / tally.seconds, 1)
    counts = Counter(ids)
    tally.accepted = len(counts)
    tally.duplicated = sum(n - 1 for n in counts.values())
    found = rows(engine, counts)
    tally.lost = len(counts) - len(found)
    total = sum(status_counts(engine).values()) - before
    if total != len(ids):
        tally.problem(f"the database holds {total} new jobs for {len(ids)} accepted")
    if {r.status for r in found.values()} - {"queued"}:
        tally.problem("jobs ran while the OCR server was stopped")
    for status, n in statuses.items():
        if status != 200:
            tally.problem(f"{n} submissions answered {status}")
    return tally


def _numbered(base: bytes, n: int) -> bytes:
    # PNG readers ignore bytes after IEND; the digest, and so the job, differs per n.
    return base + f"#{n}".encode()
