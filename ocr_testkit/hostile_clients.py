"""Hostile clients against real processes: slow senders, a stalled OCR server, costly images.

Each case returns a ``HostileTally`` (see hostile.py) and never asserts: the tests in
test_hostile_clients.py assert that it saw no problem, and ``bench/reliability.py`` prints it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import string
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


# Methods the OCR server's parser (llhttp) knows beside the usual ones: they reach its app,
# where any other token is refused before.
EXTRA_METHODS = [
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
    "QUERY",
]
TOKEN_CHARS = string.ascii_uppercase + string.digits + "!#$%&'*+-.^_`|~"


def _scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, int, float]:
    """(series, bytes, seconds) of one scrape of ``url``'s /metrics."""
    started = time.monotonic()
    response = requests.get(f"{url}/metrics", headers=headers, timeout=120)
    seconds = time.monotonic() - started
    response.raise_for_status()
    series = sum(1 for line in response.text.splitlines() if line and not line.startswith("#"))
    return series, len(response.content), seconds


def made_up_methods(
    stack: Stack, engine: Engine, requests_count: int = 8_000, connections: int = 8
) -> HostileTally:
    """``requests_count`` requests with made-up methods and paths, on keep-alive connections,
    to the API (and, with the methods its parser knows, the OCR server): each is answered
    404 or 405, and neither /metrics grows with them (a label value a client chose would be
    a series kept until a restart: 616 MB and a 453 MB scrape after 8,000 of them)."""
    tally = HostileTally(f"{requests_count} requests with made-up methods and paths")
    token = stack.env.get("OCR_INTERNAL_TOKEN")
    ocr_headers = {"X-Internal-Token": token} if token else None

    def send(service: str, count: int, seed: int) -> list[int | None]:
        rng = random.Random(seed)
        url = urlsplit(stack.api_url if service == "api" else stack.server_url)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        statuses: list[int | None] = []
        for _ in range(count):
            made_up = "".join(rng.choices(TOKEN_CHARS, k=rng.randint(3, 24)))
            method = made_up if service == "api" else rng.choice(EXTRA_METHODS)
            path = "/" + "".join(rng.choices(string.ascii_lowercase, k=12))
            try:
                conn.request(method, path, headers={"Host": "localhost"})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            except (OSError, http.client.HTTPException):
                statuses.append(None)
                conn.close()
        conn.close()
        return statuses

    def flood(count: int) -> None:
        per_connection = max(1, count // connections)
        with ThreadPoolExecutor(connections) as pool:
            api = pool.map(lambda n: send("api", per_connection, n), range(connections))
            ocr = pool.map(lambda n: send("ocr", per_connection // 8, -n), range(connections))
            for status in (s for statuses in api for s in statuses):
                tally.expect(status in (404, 405), f"API: a made-up method answered {status}")
            for status in (s for statuses in ocr for s in statuses):
                tally.expect(
                    status in (401, 404, 405), f"OCR server: an odd method answered {status}"
                )

    api_before = _scrape(stack.api_url)
    ocr_before = _scrape(stack.server_url, ocr_headers)
    with RssSampler(stack) as rss:
        flood(requests_count // 4)  # every label value reachable is reached here...
        api_early, ocr_early = _scrape(stack.api_url), _scrape(stack.server_url, ocr_headers)
        flood(requests_count - requests_count // 4)  # ...and no more after it
        api_after, ocr_after = _scrape(stack.api_url), _scrape(stack.server_url, ocr_headers)
    rss.record(tally)
    for name, before, early, after in (
        ("API", api_before, api_early, api_after),
        ("OCR server", ocr_before, ocr_early, ocr_after),
    ):
        tally.notes[f"{name} series before / after"] = f"{before[0]} / {after[0]}"
        tally.notes[f"{name} /metrics KB before / after"] = (
            f"{before[1] / 1000:.1f} / {after[1] / 1000:.1f}"
        )
        tally.notes[f"{name} scrape s after"] = round(after[2], 3)
        if after[0] != early[0]:
            tally.problem(f"{name}: /metrics grew from {early[0]} to {after[0]} series")
    tally.others_kept_finishing = kept_finishing(
        engine, probe(stack, tally, 2.0, "after the flood"), tally
    )
    return tally.done()


EVIL_ORIGIN = "http://evil.example"
REBOUND_HOST = "rebind.evil.example"


def browser_tricks(stack: Stack, engine: Engine) -> HostileTally:
    """What a web page can make a visitor's browser send to a service on their machine: with
    its Host rebound to the service's address, read the jobs (421 invalid_host, on both
    services); a cross-site simple POST (text/plain, a form, multipart, no type), queue a job
    (403 cross_origin_request, nothing stored). The service's own page and clients that are
    not browsers keep working."""
    tally = HostileTally("browser tricks: DNS rebinding, cross-site simple requests")
    session = requests.Session()
    page = tiny_page(marker("Browser", 0))
    task = call(session, "POST", stack.url("/image"), json={"image_data": b64(page)})
    tally.expect(task.status == 200, f"POST /image answered {task.status} {task.body}")
    task_id = str(task.body["task_id"]) if task.status == 200 else "none"
    api_port = urlsplit(stack.api_url).port
    rebound = {"Host": f"{REBOUND_HOST}:{api_port}"}
    for path in ("/allimages", f"/image?task_id={task_id}", "/v1/jobs", f"/v1/jobs/{task_id}"):
        answer = call(session, "GET", stack.url(path), headers=rebound)
        tally.expect(
            answer.status == 421
            and (answer.code or answer.v1_code) == "invalid_host"
            and (path.endswith(task_id) or task_id not in str(answer.body)),
            f"GET {path} with Host {REBOUND_HOST} answered {answer.status} {answer.body}",
        )
    for method, path in (("GET", "/status"), ("GET", "/metrics"), ("POST", "/ocr")):
        url = f"{stack.server_url}{path}"
        answer = call(session, method, url, headers={"Host": REBOUND_HOST}, data=b"{}")
        tally.expect(
            answer.status == 421 and answer.code == "invalid_host",
            f"OCR server {method} {path} with Host {REBOUND_HOST} answered {answer.status}",
        )

    jobs_before = sum(status_counts(engine).values())
    image_json = json.dumps({"image_data": b64(page)})
    document_json = json.dumps({"document": b64(page)})
    for path, body in (
        ("/image", image_json),
        ("/image-sync", image_json),
        ("/v1/jobs", document_json),
        ("/v1/ocr", document_json),
    ):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Origin": EVIL_ORIGIN}
            if content_type:
                headers["Content-Type"] = content_type
            answer = call(session, "POST", stack.url(path), headers=headers, data=body)
            tally.expect(
                answer.status == 403 and (answer.code or answer.v1_code) == "cross_origin_request",
                f"a cross-site {content_type} POST {path} answered {answer.status} {answer.body}",
            )
    forms = call(
        session,
        "POST",
        stack.url("/v1/jobs"),
        headers={"Origin": "null"},
        files={"file": ("page.png", page, "image/png")},
    )
    tally.expect(forms.status == 403, f"a multipart POST from a sandbox answered {forms.status}")
    ocr = call(
        session,
        "POST",
        f"{stack.server_url}/ocr",
        headers={"Origin": EVIL_ORIGIN, "Content-Type": "text/plain"},
        data=document_json,
    )
    tally.expect(ocr.status == 403, f"a cross-site POST to the OCR server answered {ocr.status}")
    stored = sum(status_counts(engine).values()) - jobs_before
    tally.notes["jobs stored by cross-site requests"] = stored
    if stored:
        tally.problem(f"cross-site requests stored {stored} jobs")

    # The service's own page (same origin, multipart) and the original API's clients.
    ids = [task_id] if task.status == 200 else []
    own = call(
        session,
        "POST",
        stack.url("/v1/jobs"),
        headers={"Origin": stack.api_url},
        files={"file": ("page.png", page, "image/png")},
    )
    tally.expect(own.status == 202, f"the page's own upload answered {own.status} {own.body}")
    if own.status == 202:
        ids.append(str(own.body["id"]))
    for content_type in (None, "application/x-www-form-urlencoded"):
        headers = {"Content-Type": content_type} if content_type else {}
        plain = call(session, "POST", stack.url("/image"), headers=headers, data=image_json)
        tally.expect(plain.status == 200, f"a {content_type} client answered {plain.status}")
        if plain.status == 200:
            ids.append(str(plain.body["task_id"]))
    tally.others_kept_finishing = kept_finishing(engine, ids, tally)
    return tally.done()
