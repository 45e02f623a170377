"""Hostile and everyday inputs against real processes: what each did to the service.

A case never asserts: it returns a ``HostileTally`` (requests tried, answered as expected, peak
memory of the API and of an engine while it ran, whether other jobs kept finishing) and the
``problems`` it saw. Tests assert that there are none; ``bench/reliability.py`` prints the
figures in its "hostile input" table.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType

from ocr_testkit.scenarios import Tally
from ocr_testkit.stack import Stack, group_members

PAGE_BYTES = 4096
SAMPLE_EVERY_S = 0.05


@dataclass
class HostileTally(Tally):
    """What one hostile case did: answers, memory, and the work of everyone else."""

    case: str
    tried: int = 0
    as_expected: int = 0
    api_peak_rss_mb: float | None = None
    engine_peak_rss_mb: float | None = None
    # Whether ordinary jobs submitted meanwhile still finished (None: not checked).
    others_kept_finishing: bool | None = None

    def expect(self, ok: bool, message: str) -> None:
        """Count one answer; a wrong one is a problem described by ``message``."""
        self.tried += 1
        if ok:
            self.as_expected += 1
        else:
            self.problem(message)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


class RssSampler:
    """Samples, while the ``with`` block runs, the API's total resident memory (master and
    workers) and the largest engine process of the OCR server, so that an engine killed for
    its size still counts."""

    def __init__(self, stack: Stack):
        self._stack = stack
        self.api_peak_bytes = 0
        self.engine_peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            api = self._stack.api.pid
            self.api_peak_bytes = max(
                self.api_peak_bytes, sum(rss_bytes(pid) for pid in group_members(api))
            )
            ocr = self._stack.ocr.pid
            engines = [rss_bytes(pid) for pid in group_members(ocr) if pid != ocr]
            self.engine_peak_bytes = max(self.engine_peak_bytes, *engines, 0)
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def record(self, tally: HostileTally) -> None:
        tally.api_peak_rss_mb = round(self.api_peak_bytes / 2**20, 1)
        tally.engine_peak_rss_mb = round(self.engine_peak_bytes / 2**20, 1)
