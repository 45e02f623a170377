"""One AST at a time in the tests' process.

CPython 3.11 keeps the AST constructor's recursion depth in state shared by the whole
interpreter, so two threads building an AST at once fail with "SystemError: AST constructor
recursion depth mismatch" (python/cpython#106905). In the tests both happen: pytest rewrites a
plugin's module (schemathesis, hypothesis) with ``ast.parse`` as it is first imported, while a
server thread formats a traceback (3.11's tracebacks parse the failing line to place their
carets). Not ours to fix; this process builds one AST at a time, and retries the spurious error.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_SPURIOUS = "AST constructor recursion depth mismatch"
_ATTEMPTS = 3
_lock = threading.RLock()
_parse = ast.parse


def _one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _lock:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return _parse(*args, **kwargs)
            except SystemError as exc:
                if _SPURIOUS not in str(exc) or attempt == _ATTEMPTS:
                    raise
    raise AssertionError("unreachable")


def serialize_ast_parse() -> None:
    """Make ``ast.parse`` (which pytest and ``traceback`` call through the module) serialized."""
    if ast.parse is not _one_at_a_time:
        ast.parse = _one_at_a_time
