"""No import circle inside a package: no module imports one that imports it back, directly or
through others, counting every import (in functions and under TYPE_CHECKING as well)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_within(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of ``package`` (under ``root``) and the modules of the same package it
    imports."""
    modules = {path.stem: path for path in (root / package).glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == package:
                    if node.module and node.level == 1:
                        found.add(node.module.split(".")[0])
                    else:
                        found.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith(package + "."):
                    found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(
                    alias.name.split(".")[1]
                    for alias in node.names
                    if alias.name.startswith(package + ".")
                )
        graph[name] = (found & set(modules)) - {name}
    return graph


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


@pytest.mark.parametrize("package", ["ocr_server", "api_server", "ocr_common"])
def test_no_module_imports_one_that_imports_it_back(package: str) -> None:
    graph = imports_within(package)
    assert len(graph) > 5
    assert circle(graph) is None, f"{package}: an import circle"


def test_type_only_and_function_imports_count(tmp_path: Path) -> None:
    # What ocr_server had (issue 21): metrics imported the dispatcher for its collector's types.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "metrics.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .dispatcher import D\n"
    )
    (package / "dispatcher.py").write_text("def f():\n    from pkg import metrics\n")
    (package / "pool.py").write_text("import pkg.engine\n")
    (package / "engine.py").write_text("")
    graph = imports_within("pkg", tmp_path)
    assert graph == {
        "metrics": {"dispatcher"},
        "dispatcher": {"metrics"},
        "pool": {"engine"},
        "engine": set(),
    }
    assert circle(graph) is not None
