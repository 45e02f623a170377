"""The client library on its own: retries against a real little HTTP server, the manifest, the
file list; the API's names it copies. (Against the real services: test/e2e/test_ocr_client.py;
installed alone: test/e2e/test_client_alone.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_ocr import api_client

from ocr_client import (
    ApiError,
    ClientError,
    NotTheService,
    OcrClient,
    RetryPolicy,
    Stopped,
    Unreachable,
    cli,
)
from ocr_client.batch import RESULT_SUFFIXES, collect_sources, is_document
from ocr_client.client import FINISHED
from ocr_client.manifest import MANIFEST_NAME, Entry, Manifest
from ocr_common.db import make_engine, make_session_factory
from ocr_testkit.pages import render_document, render_lines

PROBLEM = {"type": "about:blank", "status": 429, "code": "rate_limited", "detail": "slow down"}


class Script:
    """Answers to give, in order (the last one repeats), and the times requests came."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], dict[str, object]]] = []
        self.times: list[float] = []


class Answering(BaseHTTPRequestHandler):
    """A request handler that answers JSON (or bytes), and logs nothing."""

    def answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[Answering]) -> Iterator[str]:
    """``handler`` on a free port, on a thread; its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(Answering):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            script.times.append(time.monotonic())
            index = min(len(script.times), len(script.answers)) - 1
            status, headers, body = script.answers[index]
            self.answer(status, body, headers)

    with serving(Handler) as url:
        yield url, script


def test_a_429_is_retried_after_the_time_in_retry_after(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(429, {"Retry-After": "1"}, PROBLEM), (200, {}, {"task_id": "text\n"})]
    client = OcrClient(url, retry=RetryPolicy.patient(total_s=30))
    assert client.get_image("x") == {"task_id": "text\n"}
    assert len(script.times) == 2
    # At least what the server asked; the backoff alone would have retried after 0.5 s.
    assert script.times[1] - script.times[0] >= 1.0


def test_a_503_without_retries_is_an_api_error_with_code_and_retry_after(
    server: tuple[str, Script],
) -> None:
    url, script = server
    body = {"error": {"code": "ocr_busy", "message": "every engine is busy"}}
    script.answers = [(503, {"Retry-After": "7"}, body)]
    with pytest.raises(ApiError) as caught:
        OcrClient(url).get_image("x")
    assert (caught.value.status, caught.value.code, caught.value.retry_after_s) == (
        503,
        "ocr_busy",
        7,
    )
    assert str(caught.value) == "HTTP 503: every engine is busy"
    assert len(script.times) == 1


def test_a_400_is_not_retried(server: tuple[str, Script]) -> None:
    url, script = server
    problem = {"status": 400, "code": "invalid_image", "detail": "not an image", "field": "file"}
    script.answers = [(400, {}, problem)]
    with pytest.raises(ApiError) as caught:
        OcrClient(url, retry=RetryPolicy.patient(total_s=30)).get_image("x")
    assert (caught.value.code, caught.value.field, caught.value.message) == (
        "invalid_image",
        "file",
        "not an image",
    )
    assert len(script.times) == 1


def test_an_unreachable_server_is_retried_until_the_time_runs_out() -> None:
    started = time.monotonic()
    client = OcrClient("http://127.0.0.1:9", retry=RetryPolicy.patient(total_s=1.5))
    with pytest.raises(Unreachable, match="cannot reach http://127.0.0.1:9/image") as caught:
        client.get_image("x")
    assert time.monotonic() - started >= 1.5
    assert caught.value.reason == "connection refused"


def test_an_unreachable_service_is_one_line_with_the_reason() -> None:
    """Not requests' "HTTPConnectionPool(host=..., port=...): Max retries exceeded ...
    NewConnectionError(...)"."""
    with pytest.raises(Unreachable) as caught:
        OcrClient("http://127.0.0.1:9").get_image("x")
    assert str(caught.value) == "cannot reach http://127.0.0.1:9/image (connection refused)"


@pytest.mark.timeout(30)
def test_a_service_gone_mid_sync_is_said_in_one_line(
    fake_api: tuple[str, FakeApi], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, api = fake_api
    api.down = True  # /healthz answers, the document's request gets no answer
    page = tmp_path / "page.png"
    page.write_bytes(PNG)
    assert cli.main(["sync", str(page), "--url", url, "--retry-for", "0"]) == 1
    assert capsys.readouterr().err == (
        f"ocr-client: cannot reach {url}/v1/ocr (remote end closed connection without response)\n"
    )


def test_a_url_where_no_service_answers_is_said_in_one_line() -> None:
    client = OcrClient("http://127.0.0.1:9", retry=RetryPolicy.patient(total_s=1))
    with pytest.raises(Unreachable) as caught:
        client.check_service()
    assert str(caught.value) == (
        "no OCR service answers at http://127.0.0.1:9 (tried for 1 s: connection refused)"
    )


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (
            200,
            {"status": "ok", "service": "ocr-server"},
            "is the OCR server's internal API, not the API: use the API server's URL",
        ),
        (404, {"detail": "not here"}, "answers, but not as the OCR service's API (GET /healthz: "),
        (200, {"hello": "world"}, "answers, but not as the OCR service's API (GET /healthz: "),
    ],
)
def test_a_url_that_is_not_the_api_is_said_in_one_line(
    server: tuple[str, Script], status: int, body: dict[str, object], said: str
) -> None:
    url, script = server
    script.answers = [(status, {}, body)]
    with pytest.raises(NotTheService) as caught:
        OcrClient(url).check_service()
    message = str(caught.value)
    assert message.startswith(url) and said in message and "\n" not in message, message


def test_the_api_passes_the_check(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [(503, {"Retry-After": "0"}, PROBLEM), (200, {}, {"status": "ok"})]
    OcrClient(url, retry=RetryPolicy.patient(total_s=10)).check_service()
    assert len(script.times) == 2


def test_text_methods_refuse_the_pdf_and_name_the_bytes_method(
    server: tuple[str, Script],
) -> None:
    url, script = server
    client = OcrClient(url)
    with pytest.raises(ClientError, match=r"use download\(\)"):
        client.result("a-job", "pdf")
    with pytest.raises(ClientError, match=r"use ocr_bytes\(\)"):
        client.ocr(b"%PDF-1.4", fmt="PDF")
    assert script.times == []  # refused before any request


def test_stopping_ends_a_retry_back_off_at_once() -> None:
    client = OcrClient(
        "http://127.0.0.1:9",
        retry=RetryPolicy(max_attempts=100, max_total_s=60, initial_backoff_s=20, max_backoff_s=20),
    )
    threading.Timer(0.3, client.stopping.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        client.get_image("x")
    assert time.monotonic() - started < 10


def test_the_manifest_survives_a_torn_last_line(tmp_path: Path) -> None:
    done = Entry("a.png.txt", "in/a.png", "1" * 64, "r", "done", job="j1", pages=1)
    Manifest(tmp_path).record(done)
    with open(tmp_path / MANIFEST_NAME, "a") as file:
        file.write('{"output": "b.png.txt", "source": "in/b.pn')  # the crash came here
    manifest = Manifest(tmp_path)
    assert manifest.get("a.png.txt") == done
    assert manifest.get("b.png.txt") is None
    later = Entry("b.png.txt", "in/b.png", "2" * 64, "r", "submitted", job="j2")
    manifest.record(later)
    reread = Manifest(tmp_path)
    assert reread.get("a.png.txt") == done and reread.get("b.png.txt") == later


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 8


def test_sources_keep_the_folder_layout_and_skip_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "scans" / "2024").mkdir(parents=True)
    (tmp_path / "scans" / "a.png").write_bytes(PNG)
    (tmp_path / "scans" / "2024" / "b.pdf").write_bytes(b"%PDF-1.7\n")
    (tmp_path / "scans" / ".DS_Store").write_bytes(b"")
    (tmp_path / "scans" / ".cache").mkdir()
    (tmp_path / "scans" / ".cache" / "c.png").write_bytes(PNG)
    (tmp_path / "d.tif").write_bytes(b"II*\x00")
    # The output folder inside an input folder: its results are not read again.
    (tmp_path / "scans" / "out").mkdir()
    (tmp_path / "scans" / "out" / "a.png.hocr").write_text("<html/>")
    sources, left_out = collect_sources(
        [tmp_path / "scans", tmp_path / "d.tif"], "hocr", exclude=tmp_path / "scans" / "out"
    )
    assert [s.output for s in sources] == ["2024/b.pdf.hocr", "a.png.hocr", "d.tif.hocr"]
    assert left_out == []


@pytest.mark.parametrize(
    "head",
    [
        render_lines(["x"]),
        render_lines(["x"], fmt="JPEG"),
        render_lines(["x"], fmt="TIFF"),
        render_document([["x"]], "TIFF")[:64],
        render_lines(["x"], fmt="BMP"),
        render_lines(["x"], fmt="GIF"),
        render_lines(["x"], fmt="WEBP"),
        render_lines(["x"], fmt="PPM"),
        render_lines(["x"], fmt="JPEG2000"),
        render_lines(["x"], mode="1", fmt="PPM"),
        render_document([["x"]], "PDF"),
        b"\xef\xbb\xbf junk a PDF reader skips %PDF-1.4\n",
        b"\xff\x4f\xff\x51\x00\x2f",  # a bare JPEG 2000 codestream
        b"MM\x00*\x00\x00\x00\x08",  # a big-endian TIFF
    ],
)
def test_images_and_pdfs_are_known_by_their_first_bytes(head: bytes) -> None:
    assert is_document(head[:1024])


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"a shopping list, not an image\n",
        b"BMW service, 12 May\n",  # "BM", but no bitmap header after it
        b"P6x",  # "P6" not followed by a space
        b"PK\x03\x04",  # a zip (a .docx, say)
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a sound, not a WebP
        b"\x00" * 2048 + b"%PDF-1.4",  # the PDF header past the first kilobyte
    ],
)
def test_other_files_are_not_documents(head: bytes) -> None:
    assert not is_document(head[:1024])


def test_files_that_are_not_documents_are_left_out_unless_included(tmp_path: Path) -> None:
    (tmp_path / "scans" / "2024").mkdir(parents=True)
    (tmp_path / "scans" / "a.png").write_bytes(PNG)
    (tmp_path / "scans" / "notes.png").write_text("a shopping list\n")
    (tmp_path / "scans" / "2024" / "README.txt").write_text("scanned in May\n")
    (tmp_path / "scans" / "2024" / "b").write_bytes(b"%PDF-1.7\n")  # no extension: read
    named = tmp_path / "list.txt"
    named.write_text("named, and still not a document\n")
    inputs = [tmp_path / "scans", named]
    sources, left_out = collect_sources(inputs, "text")
    assert [s.output for s in sources] == ["2024/b.txt", "a.png.txt"]
    assert sorted(p.name for p in left_out) == ["README.txt", "list.txt", "notes.png"]
    # --include: by name, whatever the bytes; nothing else.
    sources, left_out = collect_sources(inputs, "text", include=["*.png"])
    assert [s.output for s in sources] == ["a.png.txt", "notes.png.txt"] and left_out == []
    sources, _ = collect_sources(inputs, "text", include=["2024/*", "*.txt"])
    assert [s.output for s in sources] == ["2024/README.txt.txt", "2024/b.txt", "list.txt.txt"]


def test_links_inside_a_folder_are_skipped_and_reported(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "id_rsa").write_bytes(b"secret")
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.png").write_bytes(PNG)
    (tmp_path / "scans" / "key.png").symlink_to(secret / "id_rsa")
    (tmp_path / "scans" / "more").symlink_to(secret, target_is_directory=True)
    (tmp_path / "scans" / "inside.png").symlink_to(tmp_path / "scans" / "a.png")
    (tmp_path / "scans" / "broken.png").symlink_to(tmp_path / "nothing")
    skipped: list[tuple[str, str]] = []
    sources, _ = collect_sources(
        [tmp_path / "scans"], "text", on_skip=lambda path, why: skipped.append((path.name, why))
    )
    assert [s.path.name for s in sources] == ["a.png"]
    assert sorted(name for name, _why in skipped) == ["broken.png", "inside.png", "key.png", "more"]
    assert all("symbolic link" in why for _name, why in skipped)
    # A link named on the command line is the user's choice: it is read.
    named, _ = collect_sources([tmp_path / "scans" / "key.png"], "text", include=["*.png"])
    assert [s.path.name for s in named] == ["key.png"]


def test_the_command_says_which_links_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "key.png").symlink_to(tmp_path / "outside.png")
    (tmp_path / "outside.png").write_bytes(b"x")
    # Nothing is left to read: the run says so and ends before reaching the (absent) server.
    code = cli.main(
        [
            "run",
            str(tmp_path / "scans"),
            "--out",
            str(tmp_path / "out"),
            "--url",
            "http://127.0.0.1:9",
        ]
    )
    err = capsys.readouterr().err
    assert "skipped" in err and "key.png" in err and "symbolic link" in err
    assert "nothing to read" in err
    assert code == 1


def test_two_sources_writing_the_same_result_are_refused(tmp_path: Path) -> None:
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(PNG)
    with pytest.raises(ClientError, match="would both write a.png.txt"):
        collect_sources([tmp_path / "x", tmp_path / "y"], "text")
    with pytest.raises(ClientError, match="no such file or folder"):
        collect_sources([tmp_path / "missing"], "text")


def test_the_names_the_client_copies_are_the_apis(sqlite_url: str) -> None:
    """The client imports no server code: the option names and values it sends, the formats it
    asks for and the states that end a wait are its own copies, equal to /openapi.json's."""
    sessions = make_session_factory(make_engine(sqlite_url))
    spec = api_client(sessions).get("/openapi.json").get_json()
    for path in ("/v1/jobs", "/v1/ocr"):
        operation = spec["paths"][path]["post"]
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert set(cli.OPTIONS) <= set(form) - {"file"}, path
        assert list(cli.PREPROCESS) == form["preprocess"]["enum"], path
    assert "Idempotency-Key" in {p["name"] for p in spec["paths"]["/v1/jobs"]["post"]["parameters"]}
    for path, operation in (("/v1/ocr", "post"), ("/v1/jobs/{job_id}", "get")):
        parameters = spec["paths"][path][operation]["parameters"]
        (fmt,) = (p["schema"]["enum"] for p in parameters if p["name"] == "format")
        assert set(RESULT_SUFFIXES) == set(fmt), path
    states = spec["components"]["schemas"]["JobStatus"]["enum"]
    assert set(states) - {"queued", "running"} == FINISHED


@pytest.mark.parametrize("out", ["scans", "./scans/", "scans/../scans", "."])
def test_an_output_folder_that_is_an_input_folder_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    out: str,
) -> None:
    """Results written into the folder walked would be read as documents on the next run
    (``a.png.pdf``, then ``a.png.pdf.pdf``): refused before anything is read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "notes.txt").write_text("not a document\n")
    given = "." if out == "." else "scans"
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", given, "--out", out, "--url", "http://127.0.0.1:9"])
    assert caught.value.code == cli.EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert f"--out {out} is the input folder {given}: each run would read the results" in err
    assert f"--out {Path(given) / 'text'}" in err


def test_an_output_folder_under_an_input_folder_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "notes.txt").write_text("not a document\n")
    # Past the check: nothing to read, before reaching the (absent) server.
    assert cli.main(["run", "scans", "--out", "scans/text", "--url", "http://127.0.0.1:9"]) == 1
    assert "nothing to read" in capsys.readouterr().err


@pytest.mark.timeout(20)
def test_named_pipes_inside_a_folder_are_skipped_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading a named pipe's first bytes would wait for a writer for ever."""
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.png").write_bytes(PNG)
    os.mkfifo(tmp_path / "scans" / "pipe.png")
    skipped: list[tuple[str, str]] = []
    sources, left_out = collect_sources(
        [tmp_path / "scans"], "text", on_skip=lambda path, why: skipped.append((path.name, why))
    )
    assert [s.path.name for s in sources] == ["a.png"] and left_out == []
    assert skipped == [("pipe.png", "a named pipe (FIFO), not a regular file")]
    # Named on the command line, it is refused in one line, not read.
    with pytest.raises(ClientError, match=r"pipe.png: a named pipe \(FIFO\), not a file or"):
        collect_sources([tmp_path / "scans" / "pipe.png"], "text")
    # The command names it like a link it skips.
    (tmp_path / "scans" / "a.png").unlink()
    code = cli.main(["run", str(tmp_path / "scans"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'scans' / 'pipe.png'}: a named pipe (FIFO)" in err, err
    assert "nothing to read" in err and code == 1


@pytest.mark.parametrize("command", ["run", "sync"])
def test_ctrl_c_while_waiting_for_the_service_exits_130_in_one_line(
    tmp_path: Path, command: str
) -> None:
    """Ctrl-C while the first request waits (on a port that takes the connection and never
    answers): one line, exit 130, no traceback."""
    page = tmp_path / "page.png"
    page.write_bytes(PNG)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    target = [str(page), "--out", str(tmp_path / "out")] if command == "run" else [str(page)]
    # Ctrl-C as in a terminal, even where the tests run in the background with SIGINT ignored.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocr_client", command, *target, "--url", url],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        connection, _ = listener.accept()  # the client is inside its first request now
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        connection.close()
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, stderr) == (130, "ocr-client: interrupted\n")


class FakeApi:
    """A v1 API that reads each document at once (its job is done when submitted), until told
    to answer every submit with ``refuse`` or, with ``down``, to drop every connection."""

    def __init__(self) -> None:
        self.keys: list[str] = []  # the Idempotency-Key of each submit, in order
        self.refuse: tuple[int, dict[str, str], dict[str, object]] | None = None
        self.down = False
        self.read_before_down: int | None = None  # then down, after that many submits
        self.job: dict[str, object] = {"status": "succeeded"}  # what a submit answers


@pytest.fixture
def fake_api() -> Iterator[tuple[str, FakeApi]]:
    api = FakeApi()

    class Handler(Answering):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path == "/healthz":
                self.answer(200, {"status": "ok"})
            else:  # a job's result, as text
                self.answer(200, f"read by {self.path}\n".encode())

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            key = self.headers["Idempotency-Key"]
            api.keys.append(key)
            if api.read_before_down is not None and len(api.keys) > api.read_before_down:
                api.down = True
            if api.down:
                self.close_connection = True  # no answer: the client's call is refused
                return
            if api.refuse is not None:
                self.answer(*api.refuse[::2], headers=api.refuse[1])
                return
            self.answer(201, {"id": f"job{len(api.keys)}", **api.job})

    with serving(Handler) as url:
        yield url, api


def ten_pages(folder: Path) -> Path:
    folder.mkdir()
    for index in range(10):
        (folder / f"page{index}.png").write_bytes(PNG + bytes([index]))
    return folder


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("status", "headers", "body", "said"),
    [
        (
            401,
            {},
            {"status": 401, "code": "missing_api_key", "detail": "the key is wrong"},
            "the service refused the API key given (HTTP 401: the key is wrong): set --api-key "
            "or OCR_API_KEY",
        ),
        (
            429,
            {"Retry-After": "50"},
            {"status": 429, "code": "too_many_auth_failures", "detail": "too many wrong keys"},
            "the service refuses this address for 50 s after too many wrong API keys (HTTP "
            "429: too "
            "many wrong keys): set the right one with --api-key or OCR_API_KEY",
        ),
    ],
)
def test_a_refused_api_key_stops_the_whole_run_at_once(
    fake_api: tuple[str, FakeApi],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    headers: dict[str, str],
    body: dict[str, object],
    said: str,
) -> None:
    url, api = fake_api
    api.refuse = (status, headers, body)
    scans = ten_pages(tmp_path / "scans")
    args = ["run", str(scans), "--out", str(tmp_path / "out"), "--url", url, "--api-key", "x"]
    started = time.monotonic()
    code = cli.main([*args, "--concurrency", "2", "--retry-for", "100"])
    err = capsys.readouterr().err
    assert code == 1, err
    # The documents in flight when the first answer came (2), at most one more: not all 10,
    # and no waiting out the lockout's Retry-After.
    assert len(api.keys) <= 3, api.keys
    assert time.monotonic() - started < 20
    lines = err.splitlines()
    assert lines[-2].startswith("ocr-client: 0 of 10 documents done") and "10 not read" in err
    assert lines[-1] == (
        f"ocr-client: stopped: {said}; run the same command again to read the 10 document(s) "
        "not read"
    ), err
    assert "FAILED" not in err
    # sync says the same in its one line.
    assert cli.main(["sync", str(scans / "page0.png"), "--url", url, "--api-key", "x"]) == 1
    assert capsys.readouterr().err == f"ocr-client: {said}\n"


@pytest.mark.timeout(60)
def test_a_service_gone_for_longer_than_retry_for_stops_the_whole_run(
    fake_api: tuple[str, FakeApi], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, api = fake_api
    api.read_before_down = 3
    scans, out = ten_pages(tmp_path / "scans"), tmp_path / "out"
    args = ["run", str(scans), "--out", str(out), "--url", url, "--concurrency", "1"]
    started = time.monotonic()
    code = cli.main([*args, "--retry-for", "1"])
    err = capsys.readouterr().err
    assert code == 1, err
    # One wait of --retry-for for the whole run, not one per document left.
    assert time.monotonic() - started < 5
    assert len(set(api.keys)) == 4, api.keys  # 3 read, the 4th tried until it gave up
    lines = err.splitlines()
    assert lines[-2] == (
        "ocr-client: 3 of 10 documents done (3 pages; 0 done before, 3 submitted now), "
        "0 failed, 7 not read"
    )
    assert lines[-1] == (
        f"ocr-client: stopped: no OCR service answers at {url} any more (tried for 1 s: "
        "remote end closed connection without response); run the same command again to read "
        "the 7 document(s) not read"
    )
    assert len(list(out.glob("*.txt"))) == 3
    # Back up: the same command reads the rest, and only the rest.
    api.read_before_down, api.down, api.keys = None, False, []
    assert cli.main(args) == 0
    assert "10 of 10 documents done (10 pages; 3 done before, 7 submitted now)" in (
        capsys.readouterr().err
    )
    assert len(api.keys) == 7 and len(list(out.glob("*.txt"))) == 10


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ["run", "sync"])
@pytest.mark.parametrize(
    ("option", "env", "said"),
    [
        (
            ["--url", "127.0.0.1:5100"],
            None,
            "--url: '127.0.0.1:5100' needs http:// or https:// in front (e.g. "
            "'http://127.0.0.1:5100')",
        ),
        ([], "bogus", "OCR_URL: 'bogus' needs http:// or https:// in front (e.g. 'http://bogus')"),
        (
            ["--url", "ftp://host"],
            None,
            "--url: 'ftp://host' is not an http:// or https:// URL with a host",
        ),
    ],
)
def test_a_url_without_http_is_a_usage_error_at_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    option: list[str],
    env: str | None,
    said: str,
) -> None:
    """requests can never send it: it was retried for --retry-for, then called unreachable."""
    if env is None:
        monkeypatch.delenv("OCR_URL", raising=False)
    else:
        monkeypatch.setenv("OCR_URL", env)
    page = tmp_path / "page.png"
    page.write_bytes(PNG)
    target = [str(page), "--out", str(tmp_path / "out")] if command == "run" else [str(page)]
    with pytest.raises(SystemExit) as caught:
        cli.main([command, *target, *option])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"ocr-client {command}: error: {said}"
    with pytest.raises(ValueError, match="needs http:// or https://"):
        OcrClient("127.0.0.1:5100")


@pytest.mark.parametrize(
    ("code", "message", "said"),
    [
        ("canceled", "canceled by its owner", "job job1 canceled: canceled by its owner"),
        ("engine_error", "Tesseract failed", "job job1 failed: engine_error: Tesseract failed"),
    ],
)
def test_a_job_that_did_not_succeed_is_said_without_repeating_its_state(
    fake_api: tuple[str, FakeApi],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    code: str,
    message: str,
    said: str,
) -> None:
    url, api = fake_api
    api.job = {
        "status": code if code == "canceled" else "failed",
        "error": {"code": code, "message": message},
    }
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.png").write_bytes(PNG)
    assert (
        cli.main(["run", str(tmp_path / "scans"), "--out", str(tmp_path / "out"), "--url", url])
        == 1
    )
    err = capsys.readouterr().err
    assert f"  FAILED {tmp_path / 'scans' / 'a.png'}: {said}\n" in err, err


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("-5", "'-5': give 0 or more seconds (0: do not retry)"),
        ("nan", "'nan': give 0 or more seconds (0: do not retry)"),
        ("soon", "'soon' is not a number of seconds"),
    ],
)
def test_a_retry_for_below_zero_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, said: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["sync", str(tmp_path / "page.png"), "--retry-for", value])
    assert caught.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == f"ocr-client sync: error: argument --retry-for: {said}"
