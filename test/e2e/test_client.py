"""The original command-line client (test/client_test.py) against the running services."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_testkit.pages import HELLO_PNG, assert_reads
from ocr_testkit.stack import CLIENT, Stack

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]


def run_client(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT), *args, "--url", url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def answers(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    """The dicts the client printed, one a line."""
    assert result.returncode == 0, result.stderr
    return [ast.literal_eval(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pages") / "hello.png"
    path.write_bytes(HELLO_PNG)
    return path


def test_image_sync_prints_the_text(stack: Stack, page: Path) -> None:
    [answer] = answers(run_client(stack.api_url, "image-sync", "--image-path", str(page)))
    assert list(answer) == ["text"]
    assert_reads(answer["text"])


def test_post_image_then_get_image(stack: Stack, page: Path) -> None:
    [posted] = answers(run_client(stack.api_url, "post-image", "--image-path", str(page)))
    assert list(posted) == ["task_id"]
    task_id = posted["task_id"]
    assert isinstance(task_id, str)
    [pending_or_done] = answers(run_client(stack.api_url, "get-image", "--id", task_id))
    assert list(pending_or_done) == ["task_id"]
    stack.result(task_id)
    [done] = answers(run_client(stack.api_url, "get-image", "--id", task_id))
    assert_reads(done["task_id"])


def test_get_image_wait_polls_until_done(stack: Stack, page: Path) -> None:
    [posted] = answers(run_client(stack.api_url, "post-image", "--image-path", str(page)))
    [done] = answers(
        run_client(stack.api_url, "get-image", "--id", str(posted["task_id"]), "--wait")
    )
    assert_reads(done["task_id"])


def test_image_posts_then_waits(stack: Stack, page: Path) -> None:
    posted, done = answers(run_client(stack.api_url, "image", "--image-path", str(page), "--wait"))
    assert isinstance(posted["task_id"], str)
    assert_reads(done["task_id"])


def test_unknown_id_exits_non_zero_with_the_message(stack: Stack) -> None:
    result = run_client(stack.api_url, "get-image", "--id", "00000000-0000-4000-8000-000000000000")
    assert result.returncode != 0
    assert "404" in result.stderr
    assert "00000000-0000-4000-8000-000000000000" in result.stderr


def test_not_an_image_exits_non_zero(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    result = run_client(stack.api_url, "image-sync", "--image-path", str(path))
    assert result.returncode != 0
    assert "400" in result.stderr


def test_server_down_exits_non_zero(page: Path) -> None:
    result = run_client("http://127.0.0.1:9", "image-sync", "--image-path", str(page))
    assert result.returncode != 0
    assert "cannot reach" in result.stderr
