"""Hostile clients against real processes: slow senders, a stalled OCR server, costly images.

Each case returns a ``HostileTally`` (see hostile.py) and never asserts: the tests in
test_hostile_clients.py assert that it saw no problem, and ``bench/reliability.py`` prints it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
from sqlalchemy.engine import Engine

from ocr_testkit.hostile import HostileTally, RssSampler
from ocr_testkit.hostile_images import blank_png, many_scan_jpeg
from ocr_testkit.pages import b64
from ocr_testkit.scenarios import Answer, call, marker, rows, status_counts, tiny_page, wait_final
from ocr_testkit.stack import Stack, group_members

# How long an ordinary request may take while the API is under attack.
ANSWER_DEADLINE_S = 5.0
# How often a slow client sends its next few bytes.
TRICKLE_EVERY_S = 2.0
TRICKLE_BYTES = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def api_cpu_s(stack: Stack) -> float:
    """CPU seconds (user + system) used so far by the API's processes (master and workers)."""
    total = 0
    for pid in group_members(stack.api.pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class SlowClients:
    """``connections`` sockets that each send a request a few bytes every TRICKLE_EVERY_S:
    half of them their request head, the other half (after a whole head) their body."""

    def __init__(self, api_url: str, connections: int):
        parts = urlsplit(api_url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._count = connections
        self._sockets: list[tuple[socket.socket, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self.opened = 0
        self.dropped = 0

    def _payload(self, index: int) -> bytes:
        host = f"{self._address[0]}:{self._address[1]}".encode()
        if index % 2 == 0:  # a request head that never ends
            return b"POST /image HTTP/1.1\r\nHost: " + host + b"\r\n" + b"X-Slow: " + b"a" * 5000
        head = (
            b"POST /image HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        return head + b'{"image_data": "' + b"A" * 99_000

    def __enter__(self) -> SlowClients:
        for index in range(self._count):
            sock = socket.create_connection(self._address, timeout=5)
            sock.setblocking(False)
            payload = self._payload(index)
            # A body client sends its whole head at once, then trickles.
            start = payload.index(b"\r\n\r\n") + 4 if index % 2 else TRICKLE_BYTES
            sock.send(payload[:start])
            self._sockets.append((sock, payload[start:]))
            self.opened += 1
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(TRICKLE_EVERY_S):
            alive = []
            for sock, rest in self._sockets:
                try:
                    sock.send(rest[:TRICKLE_BYTES])
                    alive.append((sock, rest[TRICKLE_BYTES:]))
                except OSError:  # the server closed it (a timeout, or an answer)
                    self.dropped += 1
                    sock.close()
            self._sockets = alive

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock, _rest in self._sockets:
            sock.close()


def probe(stack: Stack, tally: HostileTally, seconds: float, label: str) -> list[str]:
    """GET /healthz and POST /image (a small page) one after the other for ``seconds``: each
    must answer 200 within ANSWER_DEADLINE_S. Returns the ids of the accepted jobs."""
    session = requests.Session()
    ids: list[str] = []
    until = time.monotonic() + seconds
    n = 0
    while time.monotonic() < until:
        health = call(session, "GET", stack.url("/healthz"), timeout_s=ANSWER_DEADLINE_S)
        tally.expect(
            health.status == 200 and health.elapsed_s < ANSWER_DEADLINE_S,
            f"{label}: /healthz answered {health.status} {health.error or ''} "
            f"after {health.elapsed_s:.1f} s",
        )
        body = {"image_data": b64(tiny_page(marker("Probe", n)))}
        post = call(session, "POST", stack.url("/image"), timeout_s=ANSWER_DEADLINE_S, json=body)
        ok = post.status == 200 and post.elapsed_s < ANSWER_DEADLINE_S
        tally.expect(
            ok,
            f"{label}: POST /image answered {post.status} {post.error or post.body} "
            f"after {post.elapsed_s:.1f} s",
        )
        if post.status == 200:
            ids.append(str(post.body["task_id"]))
        n += 1
        time.sleep(0.2)
    return ids


def kept_finishing(engine: Engine, ids: list[str], tally: HostileTally) -> bool:
    """Whether every probe job finished with its text."""
    if not ids:
        return False
    if not wait_final(engine, ids, 60):
        tally.problem("ordinary jobs submitted meanwhile did not all finish within 60 s")
        return False
    found = rows(engine, ids)
    failed = [job_id for job_id in ids if found[job_id].status != "succeeded"]
    if failed:
        tally.problem(f"{len(failed)} ordinary job(s) failed: {found[failed[0]].error_code}")
    return not failed


def slow_clients(
    stack: Stack, engine: Engine, connections: int = 200, seconds: float = 12.0
) -> HostileTally:
    """``connections`` clients send their request head or body a few bytes every 2 s; the API
    must keep answering /healthz and POST /image."""
    tally = HostileTally(f"{connections} slow clients (head or body, 3 bytes every 2 s)")
    with RssSampler(stack) as rss, SlowClients(stack.api_url, connections) as slow:
        ids = probe(stack, tally, seconds, "while slow clients send")
    rss.record(tally)
    tally.notes["slow connections opened"] = slow.opened
    tally.notes["dropped by the server meanwhile"] = slow.dropped
    tally.others_kept_finishing = kept_finishing(engine, ids, tally)
    return tally.done()


def stalled_ocr_server(
    stack: Stack, engine: Engine, waiting: int = 20, seconds: float = 8.0
) -> HostileTally:
    """SIGSTOP the OCR server with ``waiting`` /image-sync requests on their way: the API must
    keep answering POST /image and /healthz, and every /image-sync gets an answer (its text
    once the OCR server runs again, or 503 at once)."""
    tally = HostileTally(f"OCR server stopped (SIGSTOP), {waiting} /image-sync waiting")

    def sync(n: int) -> Answer:
        body = {"image_data": b64(tiny_page(marker("Stalled", n)))}
        return call(requests.Session(), "POST", stack.url("/image-sync"), timeout_s=60, json=body)

    os.kill(stack.ocr.pid, signal.SIGSTOP)
    try:
        with RssSampler(stack) as rss, ThreadPoolExecutor(waiting) as pool:
            syncs = [pool.submit(sync, n) for n in range(waiting)]
            time.sleep(1.0)  # the /image-sync requests now wait for the stopped OCR server
            ids = probe(stack, tally, seconds, "while the OCR server is stopped")
            os.kill(stack.ocr.pid, signal.SIGCONT)
            answers = [future.result() for future in syncs]
    finally:
        os.kill(stack.ocr.pid, signal.SIGCONT)
    rss.record(tally)
    busy = 0
    for answer in answers:
        text = answer.body.get("text") if isinstance(answer.body, dict) else None
        busy += answer.status == 503 and answer.elapsed_s < ANSWER_DEADLINE_S
        tally.expect(
            (answer.status == 200 and isinstance(text, str) and "Stalled" in text)
            or (answer.status == 503 and answer.code == "ocr_busy" and bool(answer.retry_after)),
            f"/image-sync answered {answer.status} {answer.error or answer.body} "
            f"after {answer.elapsed_s:.1f} s",
        )
    tally.notes["/image-sync answered 503 ocr_busy at once"] = busy
    tally.others_kept_finishing = kept_finishing(engine, ids, tally)
    return tally.done()


def costly_uploads(
    stack: Stack,
    engine: Engine,
    case: str,
    expect: tuple[int, str | None],
    submit: Iterator[Answer],
) -> HostileTally:
    """Count the answers of ``submit`` against ``expect`` (status, code), with the API's peak
    memory and the CPU it spent, then check that ordinary jobs still finish."""
    tally = HostileTally(case)
    cpu_before = api_cpu_s(stack)
    with RssSampler(stack) as rss:
        answers = list(submit)
    rss.record(tally)
    tally.notes["API CPU s"] = round(api_cpu_s(stack) - cpu_before, 2)
    for answer in answers:
        tally.expect(
            (answer.status, answer.code if expect[1] else None) == expect
            and answer.elapsed_s < ANSWER_DEADLINE_S * 2,
            f"answered {answer.status} {answer.error or answer.body} after "
            f"{answer.elapsed_s:.1f} s (want {expect})",
        )
    ids = probe(stack, tally, 2.0, "after the uploads")
    tally.others_kept_finishing = kept_finishing(engine, ids, tally)
    return tally.done()


def _concurrently(count: int, send: object) -> Iterator[Answer]:
    with ThreadPoolExecutor(count) as pool:
        yield from pool.map(lambda _n: send(), range(count))  # type: ignore[operator]


def many_scan_jpegs(stack: Stack, engine: Engine, uploads: int = 8) -> HostileTally:
    """``uploads`` progressive JPEGs of 66 KB that repeat one scan 5,000 times, at once: refused
    from their markers (413 document_too_complex), not decoded."""
    data = many_scan_jpeg()
    body = {"image_data": base64.b64encode(data).decode()}

    def send() -> Answer:
        return call(requests.Session(), "POST", stack.url("/image"), timeout_s=120, json=body)

    return costly_uploads(
        stack,
        engine,
        f"{uploads} JPEGs of {len(data) // 1000} KB with 5,000 scans, at once",
        (413, "document_too_complex"),
        _concurrently(uploads, send),
    )


def blank_png_uploads(stack: Stack, engine: Engine, uploads: int = 16) -> HostileTally:
    """``uploads`` all-zero 50-megapixel RGBA PNGs (200 KB each, 200 MB decoded), at once, as
    v1 jobs: accepted from their headers and chunk checksums without decoding; then canceled,
    so the engines do not spend minutes reading blank pages."""
    data = blank_png()
    headers = {"Content-Type": "image/png"}

    def send() -> Answer:
        return call(
            requests.Session(),
            "POST",
            stack.url("/v1/jobs"),
            timeout_s=120,
            data=data,
            headers=headers,
        )

    def submit_and_cancel() -> Iterator[Answer]:
        answers = list(_concurrently(uploads, send))
        for answer in answers:
            if answer.status == 202 and isinstance(answer.body, dict):
                requests.delete(stack.url(f"/v1/jobs/{answer.body['id']}"), timeout=30)
        yield from answers

    return costly_uploads(
        stack,
        engine,
        f"{uploads} blank 50-megapixel RGBA PNGs of {len(data) // 1000} KB, at once",
        (202, None),
        submit_and_cancel(),
    )


def batch_flood(
    stack: Stack, engine: Engine, clients: int = 8, images: int = 1000, batch: int = 32
) -> HostileTally:
    """``clients`` requests at once, each a list of ``images`` small pages, on /image and on
    /image-sync: refused whole (413 batch_too_large) before an image is read or stored; then
    lists of exactly ``batch`` (OCR_MAX_BATCH) are accepted."""
    tally = HostileTally(
        f"batch flood: {2 * clients} lists of {images} images at once, then {clients} of {batch}"
    )
    page = b64(tiny_page(marker("Flood", 0)))
    flood = {"image_data": [page] * images}
    jobs_before = sum(status_counts(engine).values())
    cpu_before = api_cpu_s(stack)

    def send(path: str, body: object) -> Answer:
        return call(requests.Session(), "POST", stack.url(path), timeout_s=120, json=body)

    with RssSampler(stack) as rss, ThreadPoolExecutor(2 * clients) as pool:
        floods = list(
            pool.map(
                lambda n: send("/image" if n % 2 else "/image-sync", flood), range(2 * clients)
            )
        )
        stored = sum(status_counts(engine).values()) - jobs_before
        full = list(
            pool.map(lambda _n: send("/image", {"image_data": [page] * batch}), range(clients))
        )
    rss.record(tally)
    tally.notes["API CPU s"] = round(api_cpu_s(stack) - cpu_before, 2)
    tally.notes["jobs stored by the refused lists"] = stored
    tally.notes["slowest refusal s"] = round(max(a.elapsed_s for a in floods), 2)
    for answer in floods:
        tally.expect(
            answer.status == 413 and answer.code == "batch_too_large",
            f"{answer.path} with {images} images answered {answer.status} "
            f"{answer.error or answer.body} after {answer.elapsed_s:.1f} s",
        )
    if stored:
        tally.problem(f"the refused lists stored {stored} jobs")
    ids: list[str] = []
    for answer in full:
        task_ids = answer.body.get("task_id") if isinstance(answer.body, dict) else None
        ok = answer.status == 200 and isinstance(task_ids, list) and len(task_ids) == batch
        tally.expect(ok, f"a list of {batch} answered {answer.status} {answer.error or ''}")
        if ok and isinstance(task_ids, list):
            ids.extend(task_ids)
    ids += probe(stack, tally, 2.0, "after the flood")
    tally.others_kept_finishing = kept_finishing(engine, ids, tally)
    return tally.done()


# 1,000 CJK characters: the most char_whitelist takes, 9,000 bytes percent-encoded.
CJK_WHITELIST = "".join(chr(0x4E00 + n) for n in range(1000))


def long_options(stack: Stack, engine: Engine) -> HostileTally:
    """v1 options at and past their bounds: the longest valid char_whitelist (1,000 CJK
    characters) is read, on /v1/ocr and /v1/jobs; past a bound (a 20,000-part lang, a
    repeated language, 1,001 characters, a page list of 12,000) is a 400 naming the field;
    never a 500, never a 503 "retry"."""
    tally = HostileTally("long options: a 1,000-character CJK whitelist, a 20,000-part lang, …")
    document = base64.b64encode(tiny_page(marker("Options", 0))).decode()
    refused: tuple[int, str | None] = (400, "invalid_option")
    long_lang: dict[str, object] = {"lang": "+".join(["eng"] * 20_000)}
    cases: list[tuple[str, str, dict[str, object], tuple[int, str | None]]] = [
        ("CJK whitelist now", "/v1/ocr", {"char_whitelist": CJK_WHITELIST}, (200, None)),
        ("CJK whitelist later", "/v1/jobs", {"char_whitelist": CJK_WHITELIST}, (202, None)),
        ("CJK blacklist now", "/v1/ocr", {"char_blacklist": CJK_WHITELIST}, (200, None)),
        ("lang of 20,000 parts", "/v1/jobs", long_lang, refused),
        ("lang of 20,000 parts now", "/v1/ocr", long_lang, refused),
        ("lang repeated", "/v1/jobs", {"lang": "eng+eng"}, refused),
        ("whitelist of 1,001", "/v1/jobs", {"char_whitelist": "a" * 1001}, refused),
        ("page list of 12,000 characters", "/v1/jobs", {"pages": "1," * 6000}, refused),
    ]
    session = requests.Session()
    accepted: list[str] = []
    with RssSampler(stack) as rss:
        for name, path, options, expect in cases:
            body = {"document": document, **options}
            answer = call(session, "POST", stack.url(path), timeout_s=60, json=body)
            got = (answer.status, (answer.v1_code or answer.code) if expect[1] else None)
            tally.expect(
                got == expect,
                f"{name}: answered {answer.status} {answer.error or answer.body} (want {expect})",
            )
            if answer.status == 202 and isinstance(answer.body, dict):
                accepted.append(str(answer.body["id"]))
    rss.record(tally)
    if accepted and not wait_final(engine, accepted, 60):
        tally.problem("the accepted job with a CJK whitelist did not finish")
    for job_id, row in rows(engine, accepted).items():
        if row.status != "succeeded":
            tally.problem(f"job {job_id} {row.status}: {row.error_code} {row.error_message}")
    ids = probe(stack, tally, 2.0, "after the options")
    tally.others_kept_finishing = kept_finishing(engine, ids, tally)
    return tally.done()
