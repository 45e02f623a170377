"""`docker compose up` for real: build, up, the original API and a v1 PDF job, two OCR
containers, the data kept across down/up, and down -v."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from compose_stack import ComposeStack

from ocr_testkit.pages import b64, render_document, render_lines
from ocr_testkit.waits import wait_until

# The first test also builds the images.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]
JOB_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def stack(images: float) -> Iterator[ComposeStack]:
    stack = ComposeStack("ocrtest-compose")
    try:
        yield stack
    finally:
        stack.down("--volumes")


def page(marker: str) -> bytes:
    return render_lines([f"{marker} quick brown fox", "The lazy dog sleeps"])


def wait_text(stack: ComposeStack, task_id: str) -> str:
    def text() -> str | None:
        answer = stack.http.get(stack.url("/image"), params={"task_id": task_id}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["task_id"]

    return str(wait_until(text, JOB_TIMEOUT_S, f"task {task_id}", interval_s=0.5))


def wait_job(stack: ComposeStack, location: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = stack.http.get(stack.url(location), timeout=10).json()
        return dict(job) if job["status"] in ("succeeded", "failed") else None

    return dict(wait_until(final, JOB_TIMEOUT_S, location, interval_s=0.5))


def test_the_stack_comes_up_healthy(stack: ComposeStack) -> None:
    seconds = stack.up()
    print(f"\ndocker compose up --wait: {seconds:.1f} s")
    assert len(stack.containers("ocr")) == 1
    assert stack.http.get(stack.url("/readyz"), timeout=10).status_code == 200


@pytest.mark.parametrize("service", ["mysql", "ocr", "api"])
def test_each_long_running_container_answers_its_healthcheck(
    stack: ComposeStack, service: str
) -> None:
    # A container without a healthcheck has no Health: `up --wait` would pass it unchecked.
    [container] = stack.containers(service)
    assert stack.inspect(container, "{{.State.Health.Status}}") == "healthy"


def test_only_the_api_is_reachable_from_the_host(stack: ComposeStack) -> None:
    [ocr], [api] = stack.containers("ocr"), stack.containers("api")
    assert not any(json.loads(stack.inspect(ocr, "{{json .NetworkSettings.Ports}}")).values())
    assert any(json.loads(stack.inspect(api, "{{json .NetworkSettings.Ports}}")).values())


@pytest.mark.parametrize("service", ["ocr", "api"])
def test_the_services_run_as_a_user_that_is_not_root(stack: ComposeStack, service: str) -> None:
    [container] = stack.containers(service)
    assert stack.python(container, "import os; print(os.getuid())").stdout.strip() != "0"


def test_only_the_ocr_image_carries_tesseract(stack: ComposeStack) -> None:
    [ocr], [api] = stack.containers("ocr"), stack.containers("api")
    found = "import tesserocr; print(tesserocr.tesseract_version())"
    assert stack.python(ocr, found).returncode == 0
    missing = stack.python(api, found, check=False)
    assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr
    # One OpenMP thread per engine: Tesseract's own threads on top make throughput worse.
    limit = "import os; print(os.environ.get('OMP_THREAD_LIMIT'))"
    assert stack.python(ocr, limit).stdout.strip() == "1"


def test_the_original_endpoints(stack: ComposeStack) -> None:
    sync = stack.http.post(stack.url("/image-sync"), json={"image_data": b64(page("Alpha"))})
    assert sync.status_code == 200, sync.text
    assert "Alpha quick brown fox" in sync.json()["text"]

    posted = stack.http.post(stack.url("/image"), json={"image_data": b64(page("Bravo"))})
    assert posted.status_code == 200, posted.text
    task_id = posted.json()["task_id"]
    assert "Bravo quick brown fox" in wait_text(stack, task_id)

    listed = stack.http.get(stack.url("/allimages"), timeout=10).json()
    assert "Bravo quick brown fox" in listed[task_id]
    assert len(listed) == 2  # the synchronous read is recorded too


def test_a_v1_pdf_job(stack: ComposeStack) -> None:
    pdf = render_document([["Charlie quick brown fox"], ["Delta lazy dog"]])
    posted = stack.http.post(
        stack.url("/v1/jobs"), files={"file": ("scan.pdf", pdf, "application/pdf")}, timeout=30
    )
    assert posted.status_code == 202, posted.text
    job = wait_job(stack, posted.headers["Location"])
    assert job["status"] == "succeeded", job
    assert [p["page"] for p in job["pages"]] == [1, 2]
    assert "Charlie" in job["pages"][0]["text"] and "Delta" in job["pages"][1]["text"]


def test_two_ocr_containers_share_the_queue(stack: ComposeStack) -> None:
    stack.up("--scale", "ocr=2")
    assert len(stack.containers("ocr")) == 2
    ids = []
    for n in range(6):
        posted = stack.http.post(stack.url("/image"), json={"image_data": b64(page(f"Echo {n}"))})
        assert posted.status_code == 200, posted.text
        ids.append(posted.json()["task_id"])
    for n, task_id in enumerate(ids):
        assert f"Echo {n} quick brown fox" in wait_text(stack, task_id)


def test_the_data_outlives_down_and_up(stack: ComposeStack) -> None:
    before = stack.http.get(stack.url("/allimages"), timeout=10).json()
    stack.down()
    assert stack.volume_names(), "down without -v must keep the database's volume"
    stack.up()
    after = stack.http.get(stack.url("/allimages"), timeout=10).json()
    assert after == before
    assert len(after) == 9


def test_down_with_volumes_removes_the_data(stack: ComposeStack) -> None:
    stack.down("--volumes")
    assert stack.volume_names() == []
    assert stack.compose("ps", "--all", "--quiet").stdout.strip() == ""
