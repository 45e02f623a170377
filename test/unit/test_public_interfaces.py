"""The services use other libraries through their public interfaces only (STYLE.md 14): no
private attribute of an object not our own, no library's internal modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["api_server", "ocr_server", "ocr_common"]
# namedtuple's documented methods carry an underscore so as not to clash with field names.
PUBLIC_WITH_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make"}
INTERNAL_MODULES = ("uvicorn.protocols", "h11._")


def private_reads(tree: ast.AST) -> list[str]:
    """``obj._name`` and ``getattr(obj, "_name")`` where obj is not ``self`` or ``cls``."""
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and not (
            isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        ):
            name = node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            name = node.args[1].value
        private = name is not None and name.startswith("_") and not name.startswith("__")
        if private and name not in PUBLIC_WITH_UNDERSCORE:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_private_attribute_of_another_object_is_read(path: Path) -> None:
    assert private_reads(ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_internal_module_of_a_library_is_imported(path: Path) -> None:
    modules = imported_modules(ast.parse(path.read_text()))
    assert [name for name in modules if name.startswith(INTERNAL_MODULES)] == []


def test_the_check_sees_what_the_old_front_did() -> None:
    old = (
        "from uvicorn.protocols.http.h11_impl import H11Protocol\n"
        "left = getattr(getattr(self.conn, '_reader', None), '_bytes_in_chunk', 0)\n"
        "transport._transport.close()\n"
    )
    tree = ast.parse(old)
    assert len(private_reads(tree)) == 3
    assert imported_modules(tree) == ["uvicorn.protocols.http.h11_impl"]
