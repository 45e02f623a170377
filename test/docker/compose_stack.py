"""The compose stack of the repository root (compose.yaml) run on a real Docker engine.

Each ``ComposeStack`` is a compose project of its own (its own containers, network and
volume), with the API published on a free loopback port: the tests talk to it only through
127.0.0.1 and ``docker compose exec``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from ocr_testkit.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
# Images the tests build once and every test project runs (a tag of their own, so that a
# developer's `latest` is left alone; OCR_TEST_IMAGE_TAG keeps two checkouts on one engine
# apart).
IMAGE_TAG = os.environ.get("OCR_TEST_IMAGE_TAG", "test")
BUILD_TIMEOUT_S = 1200
UP_TIMEOUT_S = 300
COMMAND_TIMEOUT_S = 120
Completed = subprocess.CompletedProcess[str]


def run(args: list[str], timeout_s: float = COMMAND_TIMEOUT_S, **kwargs: Any) -> Completed:
    """``args`` run with their output captured as text."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, **kwargs)


def docker_unavailable() -> str | None:
    """Why no Docker engine with compose v2 can be used here, or None when one can."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    for args in (
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["docker", "compose", "version"],
    ):
        try:
            result = run(args, timeout_s=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(args)}` failed: {exc}"
        if result.returncode != 0:
            return f"`{' '.join(args)}` failed: {(result.stderr or result.stdout).strip()[:300]}"
    return None


def compose_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCR_")}
    env.update({"OCR_IMAGE_TAG": IMAGE_TAG, "COMPOSE_PROGRESS": "plain"})
    env.update(settings)
    return env


def build_images() -> float:
    """Build both images (each once); returns the seconds it took."""
    started = time.monotonic()
    # A build needs no secrets, but compose.yaml refuses to load without them.
    trial = ROOT / "compose.trial.env"
    build = ["docker", "compose", "--env-file", str(trial), "-f", str(COMPOSE_FILE), "build"]
    result = run(build, env=compose_env(), timeout_s=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        pytest.fail(f"docker compose build failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return time.monotonic() - started


class ComposeStack:
    """One compose project on compose.yaml (plus ``overrides``), driven from the host."""

    def __init__(self, name: str, overrides: list[Path] | None = None, **settings: str):
        self.project = f"{name}-{secrets.token_hex(3)}"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.mysql_password = secrets.token_hex(16)
        self.files = [COMPOSE_FILE, *(overrides or [])]
        # compose.yaml refuses to start without the three secrets.
        self.env = compose_env(
            OCR_API_PUBLISH=f"127.0.0.1:{self.port}",
            OCR_INTERNAL_TOKEN=self.token,
            MYSQL_PASSWORD=self.mysql_password,
            MYSQL_ROOT_PASSWORD=secrets.token_hex(16),
            **settings,
        )
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self._mysql: str | None = None

    # -- compose -----------------------------------------------------------------------------

    def compose(
        self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True
    ) -> Completed:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        command = ["docker", "compose", "-p", self.project, *files, *args]
        result = run(command, timeout_s, env=self.env)
        if check and result.returncode != 0:
            pytest.fail(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}\n{self.logs()[-6000:]}"
            )
        return result

    def up(self, *args: str) -> float:
        """``up -d --wait`` (every service healthy, migrate completed); returns the seconds."""
        started = time.monotonic()
        self.compose("up", "--detach", "--wait", "--no-build", *args, timeout_s=UP_TIMEOUT_S)
        return time.monotonic() - started

    def down(self, *args: str) -> None:
        self.compose("down", "--timeout", "20", *args, timeout_s=UP_TIMEOUT_S)
        self._mysql = None

    def containers(self, service: str) -> list[str]:
        """Ids of the running containers of ``service``, in replica order."""
        out = self.compose("ps", "--format", "json", service).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if len(rows) == 1 and isinstance(rows[0], list):  # older compose: one JSON list
            rows = rows[0]
        rows.sort(key=lambda row: row["Name"])
        return [row["ID"] for row in rows if row.get("State") == "running"]

    def volume_names(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        return run(
            ["docker", "volume", "ls", "--quiet", "--filter", label], check=True
        ).stdout.split()

    def network(self) -> str:
        return f"{self.project}_default"

    def logs(self) -> str:
        result = self.compose("logs", "--no-color", "--tail", "200", check=False)
        return result.stdout + result.stderr

    # -- the database and the OCR servers, from inside the network ----------------------------

    def sql(self, query: str) -> list[list[str]]:
        """Rows of ``query`` on the stack's database (tab-separated by the mysql client)."""
        # `docker exec` on the container, not `docker compose exec`: polling this must not
        # take the CPU the OCR engines need (compose reads its files on every call).
        if self._mysql is None:
            [self._mysql] = self.containers("mysql")
        result = run(
            ["docker", "exec", "-e", f"MYSQL_PWD={self.mysql_password}", self._mysql]
            + ["mysql", "-uocr", "ocr"]
            + ["--batch", "--skip-column-names", "-e", query]
        )
        if result.returncode != 0:
            pytest.fail(f"{query!r} failed: {result.stderr}")
        return [line.split("\t") for line in result.stdout.splitlines()]

    def inspect(self, container: str, template: str) -> str:
        """``docker inspect --format template`` of one container."""
        return run(
            ["docker", "inspect", "--format", template, container], check=True
        ).stdout.strip()

    def python(self, container: str, code: str, check: bool = True) -> Completed:
        """``python -c code`` inside a running container, as its own user."""
        return run(["docker", "exec", container, "python", "-c", code], check=check)

    def ocr_status(self, container: str) -> dict[str, Any]:
        """The dispatcher's counters of one OCR server (its internal /status)."""
        code = (
            "import json, os, urllib.request as u; "
            "r = u.Request('http://127.0.0.1:5001/status', "
            "headers={'X-Internal-Token': os.environ['OCR_INTERNAL_TOKEN']}); "
            "print(u.urlopen(r, timeout=5).read().decode())"
        )
        return dict(json.loads(self.python(container, code).stdout))

    # -- the API -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.api_url + path
