"""A batch's record in its output folder: which document went to which job, and what is done.

One JSON object a line, appended and flushed as things happen; the last line about an output
wins. A line cut short by a crash is ignored, so the file is always readable and a second run
picks up where the first stopped.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

MANIFEST_NAME = "ocr-client-manifest.jsonl"

State = Literal["submitted", "done", "failed"]


@dataclass(frozen=True)
class Entry:
    output: str  # the result's path inside the output folder: the entry's key
    source: str  # the document as it was named on the command line
    sha256: str  # of the document's bytes: a changed document is read again
    request: str  # digest of the options and format: other options are another request
    state: State
    attempt: int = 1  # raised after a failure, so a retry is a new request, not a replay
    job: str | None = None
    pages: int | None = None
    error: str | None = None


class Manifest:
    """The entries of ``folder``'s manifest; ``record`` appends one (thread-safe)."""

    def __init__(self, folder: Path):
        self.path = folder / MANIFEST_NAME
        self._lock = threading.Lock()
        # A line cut short has no newline: the next one must not be glued to it.
        self._torn = False
        self._entries = self._load()

    def _load(self) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        if not self.path.exists():
            return entries
        text = self.path.read_text(encoding="utf-8", errors="replace")
        self._torn = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:
                entry = Entry(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a torn last line, or a line from another version
            entries[entry.output] = entry
        return entries

    def get(self, output: str) -> Entry | None:
        with self._lock:
            return self._entries.get(output)

    def record(self, entry: Entry) -> None:
        line = json.dumps(asdict(entry), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write("\n" + line if self._torn else line)
                self._torn = False
                file.flush()
                os.fsync(file.fileno())
            self._entries[entry.output] = entry
