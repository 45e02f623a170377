"""The web page at / in a real browser (Debian's chromium through playwright) on the real stack.

Never `playwright install`: it downloads a browser of its own, which fails here; .ci/run
installs Debian's chromium. Set OCR_SCREENSHOT_DIR to keep the screenshots (README_image/
has the one README.md and docs/web-page.md show).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright

from ocr_common.settings import hash_api_key
from ocr_testkit.database import scratch_database
from ocr_testkit.pages import HELLO_PNG, render_document, render_lines
from ocr_testkit.stack import Stack, running_stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JOB_TIMEOUT_MS = 90_000
HELLO_WORDS = ["Hello", "OCR", "world", "quick", "brown", "fox"]
API_KEY = "page-test-key-1"
SCREENSHOT = "web_page.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """The page's console errors and uncaught exceptions, except the HTTP errors expected."""

    def __init__(self, page: Page, expected_statuses: tuple[int, ...] = ()):
        self.errors: list[str] = []
        self.expected = [f"status of {status}" for status in expected_statuses]
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        text = message.text
        # Chromium logs every non-2xx fetch; those the test provokes are the API's answers.
        if text.startswith("Failed to load resource") and any(s in text for s in self.expected):
            return
        self.errors.append(f"{message.type}: {text} at {message.location}")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("OCR_SCREENSHOT_DIR")
    if keep:
        shutil.copy(path, Path(keep) / name)
    return path


def wait_for_boxes(page: Page) -> None:
    page.wait_for_selector("#stage svg rect.word", timeout=JOB_TIMEOUT_MS)


def test_an_image_is_read_and_its_word_boxes_drawn(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    console = Console(page)
    lines = [
        "Hello OCR world 42",
        "The quick brown fox jumps over the lazy dog",
        "Invoice 2024-117: total due 1,250.00 EUR",
        "Pack my box with five dozen liquor jugs",
    ]
    document = tmp_path / "letter.png"
    document.write_bytes(render_lines(lines, width=1100))
    response = page.goto(stack.url("/"))
    assert response is not None and response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page.set_input_files("#file", str(document))
    wait_for_boxes(page)

    text = page.input_value("#text")
    for word in ["Hello", "quick", "brown", "Invoice", "liquor"]:
        assert word in text, text
    assert "succeeded" in page.inner_text("#status")
    # The page image itself is drawn (a canvas), with one box per word over it.
    assert page.locator("#stage canvas").count() == 1
    boxes = page.locator("#stage svg rect.word")
    assert boxes.count() >= 25
    first = boxes.first
    # "Hello" starts 30 px from the left edge of the rendered page (ocr_testkit/pages.py).
    assert abs(float(first.get_attribute("x") or -1) - 30) < 12
    box = first.bounding_box()
    assert box is not None and box["width"] > 10 and box["height"] > 10
    first.hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    assert tip.inner_text().startswith("Hello — confidence")

    job_id = page.inner_text("#result-meta").split(" · ")[0].removeprefix("job ")
    assert page.locator("#jobs .id", has_text=job_id[:8]).count() == 1
    with page.expect_download() as download:
        page.click("button[data-format=json]")
    body = json.loads(Path(download.value.path()).read_text())
    assert body["id"] == job_id and body["status"] == "succeeded"
    assert download.value.suggested_filename == f"{job_id}.json"

    page.evaluate("document.activeElement.blur()")
    page.mouse.move(0, 0)
    screenshot(page, tmp_path, SCREENSHOT)
    assert console.errors == []


def test_a_pdf_is_drawn_page_by_page_and_downloaded_searchable(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    console = Console(page)
    document = tmp_path / "two.pdf"
    document.write_bytes(render_document([["First page here"], ["Second page there"]]))
    page.goto(stack.url("/"))
    page.click("#options summary")
    page.select_option("select[name=psm]", "6")
    page.set_input_files("#file", str(document))
    wait_for_boxes(page)
    assert "2 pages" in page.inner_text("#result-meta")
    # The browser cannot draw a PDF: the service's image of each page (the document is kept)
    # is drawn under the boxes.
    page.wait_for_selector("#stage canvas", timeout=30_000)
    assert page.inner_text("#page-label") == "Page 1 (1 of 2)"
    assert page.locator("#stage svg text").count() == 0
    page.click("#next")
    page.wait_for_function("document.querySelector('#page-label').textContent.startsWith('Page 2')")
    page.wait_for_selector("#stage canvas", timeout=30_000)
    assert page.locator("#stage canvas").count() == 1
    assert page.locator("#stage svg rect.word").count() == 3
    # The searchable PDF, downloaded.
    with page.expect_download() as download:
        page.click("button[data-format=pdf]")
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF-")
    job_id = page.inner_text("#result-meta").split(" · ")[0].removeprefix("job ")
    assert download.value.suggested_filename == f"{job_id}.pdf"
    job = requests.get(stack.url(f"/v1/jobs/{job_id}"), timeout=30).json()
    assert job["options"]["psm"] == 6
    assert console.errors == []


def test_a_non_image_shows_the_api_s_own_message(stack: Stack, page: Page, tmp_path: Path) -> None:
    console = Console(page, expected_statuses=(400,))
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"a shopping list, not an image\n")
    page.goto(stack.url("/"))
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#error:not(:empty)", timeout=30_000)
    shown = page.inner_text("#error")

    answer = requests.post(stack.url("/v1/jobs"), files={"file": notes.read_bytes()}, timeout=30)
    assert answer.status_code == 400
    problem = answer.json()
    assert problem["detail"] in shown and problem["code"] in shown, shown
    assert "HTTP 400" in shown
    assert console.errors == []


def test_by_keyboard_on_a_phone_sized_screen(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    # Playwright turns on file-chooser interception when the first listener is added, without
    # waiting for the browser: a listener added long before the key press makes sure it is on
    # (added only by expect_file_chooser, the press sometimes came first and no chooser showed).
    page.on("filechooser", lambda _chooser: None)
    console = Console(page)
    document = tmp_path / "hello.png"
    document.write_bytes(HELLO_PNG)
    page.goto(stack.url("/"))
    page.focus("#drop")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(document))
    wait_for_boxes(page)
    for word in HELLO_WORDS:
        assert word in page.input_value("#text")

    # One column: the text below the page image, and nothing wider than the screen.
    figure = page.locator("#figure").bounding_box()
    text = page.locator("#text").bounding_box()
    assert figure is not None and text is not None
    assert text["y"] >= figure["y"] + figure["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    # Arrow keys go from word to word on the page image, showing each one's confidence.
    page.focus("#stage svg")
    page.keyboard.press("ArrowRight")
    assert page.locator("#tip").inner_text().startswith("Hello — confidence")
    page.keyboard.press("ArrowRight")
    assert page.locator("#tip").inner_text().startswith("OCR — confidence")
    screenshot(page, tmp_path, "web_page_phone.png")
    assert console.errors == []
    context.close()


def test_options_default_to_auto_and_offer_the_languages_the_ocr_servers_read(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    console = Console(page)
    page.goto(stack.url("/"))
    page.click("#options summary")
    # auto reads turned pages and receipts better (docs/web-page.md: measured).
    assert page.input_value("select[name=preprocess]") == "auto"
    installed = requests.get(stack.url("/v1/languages"), timeout=30).json()["languages"]
    page.wait_for_function(
        "n => document.querySelectorAll('#lang option').length === n", arg=len(installed)
    )
    offered = page.eval_on_selector_all("#lang option", "options => options.map(o => o.value)")
    assert offered == installed and page.input_value("#lang") == "eng"
    assert page.locator("#warning").is_hidden()
    document = tmp_path / "hello.png"
    document.write_bytes(HELLO_PNG)
    page.set_input_files("#file", str(document))
    wait_for_boxes(page)
    job_id = page.inner_text("#result-meta").split(" · ")[0].removeprefix("job ")
    job = requests.get(stack.url(f"/v1/jobs/{job_id}"), timeout=30).json()
    assert (job["options"]["preprocess"], job["options"]["lang"]) == ("auto", "eng")
    assert console.errors == []


def test_a_refused_upload_clears_the_result_before_it(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    console = Console(page, expected_statuses=(400,))
    good, bad = tmp_path / "hello.png", tmp_path / "notes.png"
    good.write_bytes(HELLO_PNG)
    bad.write_bytes(b"a shopping list, not an image\n")
    page.goto(stack.url("/"))
    page.set_input_files("#file", str(good))
    wait_for_boxes(page)
    assert page.locator("#result").is_visible()
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not(:empty)", timeout=30_000)
    # The text and boxes on show were the earlier document's: they must not pass for this one's.
    assert page.locator("#result").is_hidden()
    assert "invalid_image" in page.inner_text("#error")
    assert console.errors == []


def test_a_pdf_s_progress_moves_page_by_page(stack: Stack, page: Page, tmp_path: Path) -> None:
    console = Console(page)
    pages = 6
    lines = [f"Line {n} of a page long enough to take Tesseract a while" for n in range(22)]
    document = tmp_path / "six.pdf"
    document.write_bytes(render_document([[f"Page {p}", *lines] for p in range(1, pages + 1)]))
    page.goto(stack.url("/"))
    # Every status the page shows, as it shows it.
    page.evaluate(
        """() => {
          const status = document.getElementById("status");
          window.seen = [];
          new MutationObserver(() => window.seen.push(status.textContent))
            .observe(status, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.set_input_files("#file", str(document))
    wait_for_boxes(page)
    seen = page.evaluate("window.seen")
    done = [
        int(match.group(1))
        for text in seen
        if (match := re.search(rf"(\d+) of {pages} pages read", text))
    ]
    # Pages done while the job ran, never going back, some between none and all.
    assert done == sorted(done), seen
    assert any(0 < n < pages for n in done), seen
    assert f"{pages} pages" in page.inner_text("#result-meta")
    assert console.errors == []


def test_the_page_warns_while_no_ocr_server_runs(stack: Stack, page: Page, tmp_path: Path) -> None:
    console = Console(page)
    document = tmp_path / "hello.png"
    document.write_bytes(HELLO_PNG)
    stack.ocr.stop(signal.SIGTERM)
    try:
        page.goto(stack.url("/"))
        warning = page.locator("#warning")
        warning.wait_for(state="visible")
        assert "no OCR server has been seen" in warning.inner_text()
        page.set_input_files("#file", str(document))
        page.wait_for_selector("#status:has-text('queued, 0 jobs ahead')")
        assert warning.is_visible()
        screenshot(page, tmp_path, "web_page_stalled.png")
    finally:
        stack.start_ocr()
    # Once an OCR server runs, the job is read and the warning goes.
    wait_for_boxes(page)
    assert warning.is_hidden()
    assert "Hello" in page.input_value("#text")
    assert console.errors == []


def test_a_second_stack_on_the_database_of_a_running_one_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    # Its OCR server would claim the running stack's jobs (and fail them: their documents are
    # in the other stack's blob store), as one did the keyed stack's below when it shared it.
    second = Stack(stack.database_url, tmp_path)
    try:
        with pytest.raises(AssertionError, match="already runs on this database"):
            second.start()
        assert second.ocr.proc is None and second.api.proc is None
    finally:
        second.stop()


@pytest.fixture(scope="module")
def keyed_stack(mysql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    keys = f"page={hash_api_key(API_KEY)}"
    # A database of its own: on the module's, the other stack's OCR server (still running)
    # could claim this stack's job and fail it, its document being in this stack's blob store.
    with (
        scratch_database(mysql_url, "ocr_test_keys") as database_url,
        running_stack(
            database_url, tmp_path_factory.mktemp("keyed-logs"), OCR_API_KEYS=keys
        ) as stack,
    ):
        yield stack


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_the_session_only(
    keyed_stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context()
    page = context.new_page()
    console = Console(page, expected_statuses=(401,))
    # The page itself loads without a key; the API behind it does not answer without one.
    response = page.goto(keyed_stack.url("/"))
    assert response is not None and response.status == 200
    key_form = page.locator("#key-form")
    key_form.wait_for(state="visible")

    # The wrong key's listing is answered late, after the right key is in: a 401 to a key
    # replaced since must neither ask again nor drop the new key.
    held: list[Route] = []

    def hold_the_wrong_key(route: Route) -> None:
        if route.request.headers.get("authorization") == "Bearer not-the-key":
            held.append(route)
        else:
            route.continue_()

    page.route("**/v1/jobs?*", hold_the_wrong_key)
    page.fill("#key", "not-the-key")
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-error:has-text('not accepted')")

    page.fill("#key", API_KEY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#jobs li")
    with page.expect_response(lambda response: response.status == 401):
        held.pop().continue_()
    page.wait_for_timeout(300)
    assert not key_form.is_visible()
    document = tmp_path / "hello.png"
    document.write_bytes(HELLO_PNG)
    page.set_input_files("#file", str(document))
    wait_for_boxes(page)
    assert "Hello" in page.input_value("#text")
    assert page.evaluate("sessionStorage.getItem('ocr-api-key')") == API_KEY
    assert page.evaluate("localStorage.length") == 0
    assert console.errors == []
    context.close()

    # A new browser session starts without it.
    fresh = browser.new_context()
    again = fresh.new_page()
    Console(again, expected_statuses=(401,))
    again.goto(keyed_stack.url("/"))
    again.locator("#key-form").wait_for(state="visible")
    fresh.close()
