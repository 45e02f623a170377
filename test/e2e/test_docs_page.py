"""/docs in a real browser (Debian's chromium through playwright, as test_web_page.py drives
it): Swagger UI shows every operation, loads nothing from elsewhere, and its "Try it out" of
the documented JSON example reads the example image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from ocr_testkit.stack import Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def test_swagger_ui_shows_every_operation_from_this_server_alone(stack: Stack, page: Page) -> None:
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else 0)
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    response = page.goto(stack.url("/docs"))
    assert response is not None and response.status == 200
    page.wait_for_selector(".opblock", timeout=30_000)

    shown = {
        (block.locator(".opblock-summary-method").inner_text().lower(), path)
        for block in page.locator(".opblock").all()
        for path in [block.locator(".opblock-summary-path").get_attribute("data-path")]
    }
    spec = page.request.get(stack.url("/openapi.json")).json()
    # The requests the service sends (OpenAPI "webhooks") are shown by their name.
    documented = {
        (method, path)
        for group in ("paths", "webhooks")
        for path, ops in spec.get(group, {}).items()
        for method in ops
    }
    assert shown == documented and ("post", "/v1/ocr") in shown
    assert ("post", "jobEnded") in shown
    # The API-key field: Swagger UI's Authorize dialog, from the security schemes.
    page.click("button.authorize")
    assert page.locator(".auth-container").count() == 2
    page.click("button.btn-done")

    origin = urlsplit(stack.api_url).netloc
    assert requested and all(urlsplit(url).netloc == origin for url in requested), requested
    # A CSP violation (a script, style or request the policy refused) is a console error.
    assert problems == []


def test_try_it_out_reads_the_documented_example(stack: Stack, page: Page) -> None:
    page.goto(stack.url("/docs"))
    operation = page.locator("#operations-v1-v1_ocr_now")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    # The JSON body is the first kind shown, filled in with the model's example.
    assert "application/json" in operation.locator(".body-param-content-type select").input_value()
    operation.locator("button.execute").click()
    answer = operation.locator(".live-responses-table .response .response-col_status")
    answer.wait_for(timeout=60_000)
    assert answer.inner_text().strip().startswith("200")
    details = operation.locator(".live-responses-table .response .response-col_description")
    assert '"text": "Hello OCR\\n"' in details.inner_text(), details.inner_text()
