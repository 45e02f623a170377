"""The one-container trial (the root Dockerfile), as its README line runs it: built, run with
-p, it says at start that it listens beyond loopback, reads an image posted to it, and stops
cleanly on docker stop."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import requests
from compose_stack import BUILD_TIMEOUT_S, IMAGE_TAG, ROOT, run
from conftest import require_docker

from ocr_testkit.pages import b64, render_lines
from ocr_testkit.stack import free_port
from ocr_testkit.waits import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]
IMAGE = f"ocr-service:{IMAGE_TAG}"
START_TIMEOUT_S = 120


class Trial:
    """One container of the trial image, published on a free loopback port."""

    def __init__(self) -> None:
        self.name = f"ocrtest-trial-{secrets.token_hex(3)}"
        self.url = f"http://127.0.0.1:{free_port()}"

    def start(self) -> None:
        port = self.url.rpartition(":")[2]
        started = run(
            ["docker", "run", "--detach", "--name", self.name]
            + ["--publish", f"127.0.0.1:{port}:5000", IMAGE]
        )
        assert started.returncode == 0, started.stderr

    def logs(self) -> str:
        result = run(["docker", "logs", self.name])
        return result.stdout + result.stderr

    def ready(self) -> bool:
        state = run(["docker", "inspect", "--format", "{{.State.Running}}", self.name])
        if state.stdout.strip() != "true":
            pytest.fail(f"the trial container stopped:\n{self.logs()[-6000:]}")
        try:
            return requests.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def remove(self) -> None:
        run(["docker", "rm", "--force", "--volumes", self.name])


@pytest.fixture(scope="module")
def trial() -> Iterator[Trial]:
    require_docker()
    started = time.monotonic()
    built = run(["docker", "build", "--tag", IMAGE, str(ROOT)], timeout_s=BUILD_TIMEOUT_S)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    print(f"\ndocker build (the trial image): {time.monotonic() - started:.1f} s")
    container = Trial()
    container.start()
    try:
        wait_until(container.ready, START_TIMEOUT_S, "the trial's /readyz", interval_s=1)
        yield container
    finally:
        container.remove()


def test_it_says_at_start_that_it_listens_beyond_loopback(trial: Trial) -> None:
    logs = trial.logs()
    assert "the API listens on 0.0.0.0:5000, every interface of the container" in logs, logs
    assert "API keys are off (OCR_API_KEYS is unset) and the API listens on 0.0.0.0:5000" in logs
    assert "OCR server" in logs and "sqlite" in logs


def test_an_image_posted_to_it_is_read(trial: Trial) -> None:
    page = render_lines(["Trial quick brown fox", "The lazy dog sleeps"])
    sync = requests.post(f"{trial.url}/image-sync", json={"image_data": b64(page)}, timeout=120)
    assert sync.status_code == 200, sync.text
    assert "Trial quick brown fox" in sync.json()["text"]
    queued = requests.post(
        f"{trial.url}/v1/jobs", files={"file": ("page.png", page, "image/png")}, timeout=30
    )
    assert queued.status_code == 202, queued.text

    def finished() -> dict[str, object] | None:
        job = requests.get(trial.url + queued.headers["Location"], timeout=10).json()
        return dict(job) if job["status"] in ("succeeded", "failed") else None

    job = wait_until(finished, 120, "the queued job", interval_s=0.5)
    assert job["status"] == "succeeded" and "lazy dog" in str(job["text"]), job


def test_docker_stop_stops_both_services_cleanly(trial: Trial) -> None:
    stopped = run(["docker", "stop", "--time", "30", trial.name], timeout_s=60)
    assert stopped.returncode == 0, stopped.stderr
    code = run(["docker", "inspect", "--format", "{{.State.ExitCode}}", trial.name])
    assert code.stdout.strip() == "0", trial.logs()[-4000:]
    assert "Shutting down: Master" in trial.logs()
