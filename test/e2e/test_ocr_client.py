"""``ocr-client`` (the installed command) against the running services: a folder of 20 rendered
pages and one text file posing as an image, with both servers restarted in the middle of the
batch; and what it says, in one line, when --url is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pypdfium2
import pytest
import requests

from ocr_testkit.pages import render_lines
from ocr_testkit.stack import BIN_DIR, Stack, free_port
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

NUMBERS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
MANIFEST = "ocr-client-manifest.jsonl"
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 pages, each naming its number, and a text file posing as an image."""
    folder = tmp_path_factory.mktemp("scans")
    for index, word in enumerate(NUMBERS, start=1):
        lines = [f"Page {word} of the batch", "The quick brown fox jumps", "over the lazy dog"]
        (folder / f"page{index:02d}.png").write_bytes(render_lines(lines, width=1000))
    (folder / "notes.png").write_text("a shopping list, not an image\n")
    return folder


def client_command(stack: Stack, *args: str) -> list[str]:
    return [str(BIN_DIR / "ocr-client"), *args, "--url", stack.api_url]


def run_client(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        client_command(stack, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def manifest(out: Path) -> dict[str, dict[str, object]]:
    """The last entry for each output, as a second run would read it."""
    entries: dict[str, dict[str, object]] = {}
    path = out / MANIFEST
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            entries[str(entry["output"])] = entry
    return entries


def jobs_on_server(stack: Stack) -> list[dict[str, object]]:
    response = requests.get(stack.url("/v1/jobs?limit=100"), timeout=30)
    assert response.status_code == 200, response.text
    jobs: list[dict[str, object]] = response.json()["jobs"]
    return jobs


def assert_pages_read(out: Path, suffix: str = ".png.txt") -> None:
    for index, word in enumerate(NUMBERS, start=1):
        text = (out / f"page{index:02d}{suffix}").read_text()
        assert f"Page {word} of the batch" in text, (index, text)


def test_a_folder_through_a_restart_of_both_servers(
    stack: Stack, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    log = (tmp_path / "client.log").open("w+")
    proc = subprocess.Popen(
        client_command(stack, "run", str(folder), "--out", str(out), "--concurrency", "2"),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: len(list(out.glob("*.txt"))) >= 2, 60, "the first results")
        # Both servers go away mid-batch: the client's calls are refused, then retried.
        stack.api.stop()
        stack.ocr.stop()
        written = len(list(out.glob("*.txt")))
        assert proc.poll() is None and written < len(NUMBERS), "the batch ended too soon"
        time.sleep(2)
        stack.start_ocr()
        stack.api.start()
        stack.api.wait_healthy(stack.api_url)
        status = proc.wait(RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    log.seek(0)
    output = log.read()

    assert status == 0, output
    assert_pages_read(out)
    # The text file is left out by its bytes, and said so in one line, before the batch.
    [skipped] = [line for line in output.splitlines() if "skipped" in line]
    assert skipped == (
        f"ocr-client: skipped 1 file(s) whose first bytes are not an image's or a PDF's: "
        f"{folder / 'notes.png'} (--include GLOB reads files by name instead)"
    )
    assert "20 of 20 documents done" in output and "0 failed" in output, output
    # No progress bar when the output is not a terminal (the lines it prints stay).
    assert "pages/s" not in output
    entries = manifest(out)
    states = sorted(str(e["state"]) for e in entries.values())
    assert states == ["done"] * 20
    # Each page became exactly one job, whatever was retried across the restart.
    jobs = jobs_on_server(stack)
    assert len(jobs) == 20
    assert {j["id"] for j in jobs} == {e["job"] for e in entries.values() if e["state"] == "done"}
    assert all(j["status"] == "succeeded" for j in jobs)

    # A second run resubmits nothing that is done. --include "*.png" sends the text file too,
    # by its name: the API refuses it, and the run says so.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.txt")}
    again = run_client(stack, "run", str(folder), "--out", str(out), "--include", "*.png")
    assert again.returncode == 1, again.stderr
    assert "20 done before, 0 submitted now" in again.stderr, again.stderr
    [failure] = [line for line in again.stderr.splitlines() if "FAILED" in line]
    assert "notes.png" in failure and "HTTP 400" in failure, failure
    assert len(jobs_on_server(stack)) == 20
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("*.txt")}


def test_an_interrupted_run_waits_for_its_jobs_instead_of_resubmitting(
    stack: Stack, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = len(jobs_on_server(stack))
    # The OCR server is stopped: the jobs stay queued, the client waits for them.
    stack.ocr.stop()
    args = ("run", str(folder), "--out", str(out), "--format", "json", "--concurrency", "20")
    # Ctrl-C as in a terminal, even where this suite runs in the background (a shell starts
    # background jobs with SIGINT ignored, and a child inherits that).
    proc = subprocess.Popen(
        client_command(stack, *args),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:

        def submitted() -> bool:
            return sum(1 for e in manifest(out).values() if e["state"] == "submitted") == 20

        wait_until(submitted, 60, "20 submitted jobs in the manifest")
        first = {k: e["job"] for k, e in manifest(out).items() if e["state"] == "submitted"}
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        stack.start_ocr()  # the tests after this one need it, whatever happened here
    assert proc.returncode == 130, stderr
    assert "interrupted; run the same command again to resume" in stderr

    again = run_client(stack, *args)
    assert again.returncode == 0, again.stderr
    assert "0 submitted now" in again.stderr, again.stderr
    entries = manifest(out)
    assert {k: e["job"] for k, e in entries.items() if e["state"] == "done"} == first
    assert len(jobs_on_server(stack)) == before + 20
    for index, word in enumerate(NUMBERS, start=1):
        body = json.loads((out / f"page{index:02d}.png.json").read_text())
        assert body["status"] == "succeeded" and f"Page {word}" in body["text"]
        assert body["pages"][0]["lines"][0]["words"][0]["bbox"]["width"] > 0


def test_sync_prints_the_text_with_the_url_from_the_environment(stack: Stack, folder: Path) -> None:
    def sync(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN_DIR / "ocr-client"), "sync", str(folder / name)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OCR_URL": stack.api_url},
        )

    result = sync("page03.png")
    assert result.returncode == 0, result.stderr
    assert "Page three of the batch" in result.stdout
    bad = sync("notes.png")
    assert bad.returncode == 1
    assert "HTTP 400" in bad.stderr and "image" in bad.stderr


def test_several_formats_in_one_pass_read_each_document_once(
    stack: Stack, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = len(jobs_on_server(stack))
    result = run_client(stack, "run", str(folder), "--out", str(out), "--format", "text,pdf")
    assert result.returncode == 0, result.stderr
    assert_pages_read(out)
    for index in range(1, len(NUMBERS) + 1):
        pdf = (out / f"page{index:02d}.png.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-")
        assert f"Page {NUMBERS[index - 1]}" in " ".join(words_of(pdf))
    # One job a document, not one a format.
    assert len(jobs_on_server(stack)) - before == len(NUMBERS)
    # Run again: nothing to do.
    again = run_client(stack, "run", str(folder), "--out", str(out), "--format", "text,pdf")
    assert again.returncode == 0 and len(jobs_on_server(stack)) - before == len(NUMBERS)
    wrong = run_client(stack, "run", str(folder), "--out", str(out), "--format", "text,docx")
    assert wrong.returncode == 2 and "'docx' is not one of" in wrong.stderr


def words_of(pdf: bytes) -> list[str]:
    document = pypdfium2.PdfDocument(pdf)
    try:
        return document[0].get_textpage().get_text_range().split()
    finally:
        document.close()


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole of what a failed run said: exactly one line."""
    assert result.returncode == 1, result
    [line] = result.stderr.splitlines()
    return line


def client_on(command: str, folder: Path, out: Path, *args: str) -> list[str]:
    """``ocr-client run`` or ``sync`` of one page, with ``args``."""
    target = [str(folder / "page01.png")] + (["--out", str(out)] if command == "run" else [])
    return [str(BIN_DIR / "ocr-client"), command, *target, *args]


@pytest.mark.parametrize("command", ["run", "sync"])
def test_a_url_where_nothing_answers_is_said_after_retry_for(
    folder: Path, tmp_path: Path, command: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        client_on(command, folder, tmp_path, "--url", url, "--retry-for", "3"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one_line(result) == (
        f"ocr-client: no OCR service answers at {url} (tried for 3 s: connection refused)"
    )
    assert 3 <= time.monotonic() - started < 30


@pytest.mark.parametrize("command", ["run", "sync"])
def test_the_ocr_server_s_port_is_told_apart_from_the_api(
    stack: Stack, folder: Path, tmp_path: Path, command: str
) -> None:
    result = subprocess.run(
        client_on(command, folder, tmp_path, "--url", stack.server_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one_line(result) == (
        f"ocr-client: {stack.server_url} is the OCR server's internal API, not the API: use the "
        "API server's URL (port 5000 by default)"
    )
    # Nothing was sent as a job; and a request of the public API sent there is told the same.
    assert not list(tmp_path.glob("*.txt"))
    answer = requests.post(f"{stack.server_url}/v1/ocr", data=b"x", timeout=30)
    assert answer.status_code == 404
    assert "this is the OCR server's internal API" in answer.json()["error"]["message"]
