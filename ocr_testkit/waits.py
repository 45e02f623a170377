"""Bounded waits: every poll of the tests and benchmarks has a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest


def poll_until(condition: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """Call ``condition`` until it returns something truthy (returned) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(interval_s)
    return value


def wait_until(
    condition: Callable[[], Any],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    state: Callable[[], Any] | None = None,
) -> Any:
    """Like ``poll_until``, failing the test after ``timeout_s`` (saying ``state()`` if given)."""
    value = poll_until(condition, timeout_s, interval_s)
    if not value:
        now = f"; now: {state()}" if state else ""
        pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}{now}")
    return value


async def wait_until_async(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.02
) -> Any:
    """``wait_until`` inside an event loop: the loop keeps running between polls."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)
    return value
