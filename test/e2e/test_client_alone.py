"""The client installed alone, as its README says: ``pip install ./client`` in a fresh venv gives
the ``ocr-client`` command and none of the servers' packages, and that command reads a page from
the running service and retries one that does not answer (with the newest tenacity the venv's
Python gets: 9.1 on 3.9, whose back-off took other arguments). The venv is made with this
test's Python, or with the one OCR_CLIENT_TEST_PYTHON names (a python3.9: the oldest the client
supports)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_testkit.pages import render_lines
from ocr_testkit.stack import Stack, free_port

pytestmark = [pytest.mark.mysql, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
# Building the client and fetching its few dependencies from the package index.
INSTALL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120
# What a client must not bring: the servers' stacks and the project's own server code.
SERVER_MODULES = (
    "flask",
    "sqlalchemy",
    "tesserocr",
    "pydantic",
    "ocr_common",
    "api_server",
    "ocr_server",
)
LINES = ["The client installed alone", "reads this page"]


def clean_env() -> dict[str, str]:
    """This process's environment without what would lead a subprocess to its packages."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the client installed from a copy of client/ (the build's files stay
    out of the repository)."""
    work = tmp_path_factory.mktemp("client-alone")
    shutil.copytree(
        ROOT / "client",
        work / "client",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    venv = work / "venv"
    python = os.environ.get("OCR_CLIENT_TEST_PYTHON", sys.executable)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120, env=clean_env())
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "./client"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env=clean_env(),
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def test_the_client_alone_brings_no_server_package(venv: Path) -> None:
    probe = (
        "import importlib.util, json, sys, ocr_client; print(json.dumps({"
        "'version': list(sys.version_info[:2]), 'client': ocr_client.__file__, "
        "'found': [m for m in sys.argv[1:] if importlib.util.find_spec(m)]}))"
    )
    # Run outside the repository: ``python -c`` finds the packages of its working folder.
    answer = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe, *SERVER_MODULES],
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=clean_env(),
        check=True,
    )
    seen = json.loads(answer.stdout)
    assert seen["found"] == [], seen
    # The installed copy, not the repository's.
    assert Path(seen["client"]).is_relative_to(venv), seen
    assert tuple(seen["version"]) >= (3, 9), seen


def test_the_client_alone_reads_a_page_from_the_service(
    venv: Path, stack: Stack, tmp_path: Path
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "page.png").write_bytes(render_lines(LINES, width=1000))
    command = str(venv / "bin" / "ocr-client")

    sync = subprocess.run(
        [command, "sync", str(scans / "page.png"), "--url", stack.api_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=clean_env(),
    )
    assert sync.returncode == 0, sync.stderr
    assert all(line in sync.stdout for line in LINES), sync.stdout

    out = tmp_path / "out"
    run = subprocess.run(
        [command, "run", str(scans), "--out", str(out), "--url", stack.api_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=clean_env(),
    )
    assert run.returncode == 0, run.stderr
    assert "1 of 1 documents done" in run.stderr, run.stderr
    text = (out / "page.png.txt").read_text()
    assert all(line in text for line in LINES), text


def test_the_client_alone_retries_until_it_says_no_service_answers(
    venv: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    page = tmp_path / "page.png"
    page.write_bytes(render_lines(LINES))
    answer = subprocess.run(
        [str(venv / "bin" / "ocr-client"), "sync", str(page), "--url", url, "--retry-for", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=clean_env(),
    )
    assert answer.returncode == 1
    assert answer.stderr.strip() == (
        f"ocr-client: no OCR service answers at {url} (tried for 2 s: connection refused)"
    )
