"""Run many documents through the service: a few at a time, retried, resumable.

Each document becomes a v1 job (``POST /v1/jobs`` with an ``Idempotency-Key`` made of its bytes
and options, so a submit retried after a lost answer is the same job). The manifest in the
output folder records the job as soon as it is accepted and the result once it is written, so
a second run skips what is done and waits for what was submitted instead of sending it again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from .client import (
    RETRY_STATUSES,
    ApiError,
    ClientError,
    Job,
    OcrClient,
    Options,
    Stopped,
    Unreachable,
)
from .manifest import Entry, Manifest

# The formats the API renders (checked against its /openapi.json) and their files' suffixes.
RESULT_SUFFIXES = {
    "text": ".txt",
    "json": ".json",
    "hocr": ".hocr",
    "tsv": ".tsv",
    "alto": ".alto.xml",
    "pdf": ".pdf",
}


def parse_formats(value: str) -> tuple[str, ...]:
    """The formats of ``--format``: one, or several with commas ("text,pdf"), each once."""
    formats: list[str] = []
    for name in (part.strip().lower() for part in value.split(",")):
        if name not in RESULT_SUFFIXES:
            raise ValueError(f"format {name!r} is not one of {', '.join(RESULT_SUFFIXES)}")
        if name not in formats:
            formats.append(name)
    return tuple(formats)


# The first bytes of the documents the service reads (it, too, tells them apart by their bytes,
# never by a name): PNG, JPEG, TIFF (both byte orders), GIF, JPEG 2000 (file and codestream).
# WebP, BMP, PPM and PDF are checked in ``is_document``.
SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"II*\x00",
    b"MM\x00*",
    b"GIF87a",
    b"GIF89a",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xff\x4f\xff\x51",
)
# The sizes a BMP's second header may have (BITMAPCOREHEADER to BITMAPV5HEADER).
BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
# A PDF reader accepts junk before the header within the first kilobyte.
HEAD_BYTES = 1024


def is_document(head: bytes) -> bool:
    """Whether a file that starts with ``head`` is an image or a PDF the service reads."""
    if head.startswith(SIGNATURES) or b"%PDF-" in head:
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[:2] == b"BM" and len(head) >= 18:
        return int.from_bytes(head[14:18], "little") in BMP_HEADER_SIZES
    # PBM, PGM, PPM: "P1" to "P6" and a space.
    return len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace()


def _reads_as_document(path: Path) -> bool:
    with open(path, "rb") as file:
        return is_document(file.read(HEAD_BYTES))


@dataclass(frozen=True)
class Source:
    path: Path
    output: str  # where its result goes, relative to the output folder (the first format's)
    more: tuple[str, ...] = ()  # where the other formats' results go, in their order


def collect_sources(
    inputs: Iterable[Path],
    fmt: str,
    exclude: Path | None = None,
    include: Sequence[str] = (),
    on_skip: Callable[[Path, str], None] | None = None,
) -> tuple[list[Source], list[Path]]:
    """The documents to read, and the files left out because their first bytes are not an
    image's or a PDF's.

    The files named and those under the folders named (hidden ones, and those under
    ``exclude``, the output folder, skipped), each with its result's path: ``a/b.png`` under
    folder ``DIR`` gives ``a/b.png.txt`` for text. With ``include`` glob patterns, the files
    whose path (under its folder, or as named) matches one are read whatever their bytes, and
    no other file is.

    A symbolic link inside a folder is not followed (it may lead out of the folder, to files
    the user never meant to send), nor is a named pipe, socket or device inside it read:
    ``on_skip`` is told of each, with the reason. A file or
    folder named in ``inputs`` is read wherever it is.
    """
    suffixes = [RESULT_SUFFIXES[name] for name in parse_formats(fmt)]
    suffix = suffixes[0]
    skip = exclude.resolve() if exclude is not None else None
    # Each file, the name patterns are matched against, and its result's path.
    found: list[tuple[Path, str, str]] = []
    for given in inputs:
        if given.is_dir():
            for path in sorted(_files_under(given, skip, on_skip or (lambda _path, _why: None))):
                relative = path.relative_to(given).as_posix()
                found.append((path, relative, relative + suffix))
        elif given.is_file():
            found.append((given, given.as_posix(), given.name + suffix))
        elif given.exists():
            raise ClientError(f"{given}: {_special_kind(given)}, not a file or folder to read")
        else:
            raise ClientError(f"{given}: no such file or folder")
    sources: list[Source] = []
    left_out: list[Path] = []
    for path, name, output in found:
        source = Source(path, output, tuple(output[: -len(suffix)] + more for more in suffixes[1:]))
        if include:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
                sources.append(source)
        elif _reads_as_document(path):
            sources.append(source)
        else:
            left_out.append(path)
    seen: dict[str, Path] = {}
    for source in sources:
        if source.output in seen:
            raise ClientError(
                f"{seen[source.output]} and {source.path} would both write {source.output}; "
                "run them into different --out folders"
            )
        seen[source.output] = source.path
    return sources, left_out


LINK_SKIPPED = (
    "a symbolic link (links inside a folder are not followed; name its target to read it)"
)


def _files_under(
    folder: Path, skip: Path | None, on_skip: Callable[[Path, str], None]
) -> Iterator[Path]:
    def wanted(path: Path) -> bool:
        if path.name.startswith(".") or (skip is not None and path.resolve() == skip):
            return False
        if path.is_symlink():
            on_skip(path, LINK_SKIPPED)
            return False
        return True

    # os.walk lists a link to a folder among the folders (and does not enter it), a link to a
    # file among the files; and a named pipe, socket or device among the files too.
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if wanted(Path(root) / name)]
        for name in files:
            path = Path(root) / name
            if not wanted(path):
                continue
            # Reading a named pipe's first bytes waits for a writer, for ever.
            special = _special_kind(path)
            if special is not None:
                on_skip(path, f"{special}, not a regular file")
                continue
            yield path


def _special_kind(path: Path) -> str | None:
    """What a file that is not a regular file is (a named pipe, ...), or None for a regular
    one (or one gone since it was listed: reading it says so)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


Outcome = Literal["done", "skipped", "failed"]


def stops_the_batch(exc: ClientError) -> bool:
    """An error every other document would meet too, so the batch stops at once: the API key
    refused, or the service unreachable or busy past the client's retries (429, 503)."""
    if isinstance(exc, ApiError):
        return exc.refuses_the_key or exc.status in RETRY_STATUSES
    return isinstance(exc, Unreachable)


@dataclass(frozen=True)
class FileResult:
    source: Source
    outcome: Outcome
    pages: int = 0
    job: str | None = None
    error: str | None = None
    submitted: bool = False  # a new job was submitted in this run (not skipped nor resumed)


@dataclass
class BatchReport:
    results: list[FileResult] = field(default_factory=list)
    # What stopped the batch before every document was read (see ``stops_the_batch``), and
    # the documents it left unread: a second run reads them.
    stopped_by: ClientError | None = None
    not_read: list[Source] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def failed(self) -> list[FileResult]:
        return sorted(
            (r for r in self.results if r.outcome == "failed"), key=lambda r: str(r.source.path)
        )

    @property
    def submitted(self) -> int:
        return sum(1 for r in self.results if r.submitted)

    @property
    def pages(self) -> int:
        return sum(r.pages for r in self.results if r.outcome != "failed")


class Reporter(Protocol):
    """Where progress goes (a progress bar, or nowhere). Called from worker threads."""

    def add_pages(self, count: int) -> None:
        """More (or, negative, fewer) pages to read than thought."""

    def pages_done(self, count: int) -> None:
        """``count`` more pages are read."""

    def file_finished(self, result: FileResult) -> None: ...


class SilentReporter:
    def add_pages(self, count: int) -> None:
        pass

    def pages_done(self, count: int) -> None:
        pass

    def file_finished(self, result: FileResult) -> None:
        pass


class _PageCount:
    """One file's share of the progress: guessed at one page until its job says how many."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.total = 1
        self.done = 0

    def set_total(self, total: int) -> None:
        self.reporter.add_pages(total - self.total)
        self.total = total

    def set_done(self, done: int) -> None:
        if done > self.done:
            self.reporter.pages_done(done - self.done)
            self.done = done

    def update(self, job: Job) -> None:
        if job.progress is not None:
            self.set_total(job.progress.pages_total)
            self.set_done(job.progress.pages_done)

    def finish(self) -> None:
        self.set_done(self.total)


def _job_failure(job: Job) -> str:
    """``job <id> failed: <code>: <message>``; the code left out when it only repeats the state
    (``job <id> canceled: canceled by its owner``)."""
    said = [part for part in (job.error_code, job.error_message) if part and part != job.status]
    return ": ".join([f"job {job.id} {job.status}", *said])


class Batch:
    """Documents in, one result file each in ``out_dir``; ``len(sources)`` pages guessed at
    first (the reporter's starting total), corrected as jobs say how many they have."""

    def __init__(
        self,
        client: OcrClient,
        out_dir: Path,
        *,
        fmt: str = "text",
        options: Options | None = None,
        concurrency: int = 4,
        reporter: Reporter | None = None,
        poll_interval_s: float = 0.5,
    ):
        self.formats = parse_formats(fmt)
        self.client = client
        self.out_dir = out_dir
        self.fmt = fmt
        self.options = dict(options or {})
        self.concurrency = max(1, concurrency)
        self.reporter: Reporter = reporter or SilentReporter()
        self.poll_interval_s = poll_interval_s
        self.request = hashlib.sha256(
            json.dumps({"format": fmt, "options": self.options}, sort_keys=True).encode()
        ).hexdigest()
        self.manifest = Manifest(out_dir)
        self._stop_lock = threading.Lock()
        self._stopped_by: ClientError | None = None

    def run(self, sources: list[Source]) -> BatchReport:
        """Read ``sources``; an error that ``stops_the_batch`` ends it early, in
        ``report.stopped_by`` (the documents done stay done, the others are ``not_read``)."""
        report = BatchReport()
        self._stopped_by = None
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ocr-client")
        try:
            futures = [pool.submit(self._process, source) for source in sources]
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Stopped:
                    if self._stopped_by is None:
                        raise
                    continue  # a worker stopped by the error that stops the batch
                report.results.append(result)
                self.reporter.file_finished(result)
        except BaseException:
            # Ctrl-C: the workers stop waiting at once; what they submitted is in the manifest.
            self.client.stopping.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._stopped_by is not None:
            report.stopped_by = self._stopped_by
            finished = {result.source.output for result in report.results}
            report.not_read = [source for source in sources if source.output not in finished]
            self.client.stopping.clear()  # the batch set it: the client may be used again
        return report

    def _process(self, source: Source) -> FileResult:
        count = _PageCount(self.reporter)
        try:
            result = self._read(source, count)
        except Stopped:
            raise
        except ClientError as exc:
            if stops_the_batch(exc):
                self._stop(exc)
                raise Stopped("stopped") from exc
            result = FileResult(source, "failed", error=str(exc))
        except OSError as exc:
            result = FileResult(source, "failed", error=str(exc))
        count.finish()
        return result

    def _stop(self, exc: ClientError) -> None:
        """Stop the batch for ``exc`` (the first such error is the one told): the other
        workers stop waiting, and the documents not started are not."""
        with self._stop_lock:
            if self._stopped_by is None:
                self._stopped_by = exc
        self.client.stopping.set()

    def _read(self, source: Source, count: _PageCount) -> FileResult:
        if self.client.stopping.is_set():
            raise Stopped("stopped")
        document = source.path.read_bytes()
        sha256 = hashlib.sha256(document).hexdigest()
        entry = self.manifest.get(source.output)
        if entry is not None and (entry.sha256, entry.request) != (sha256, self.request):
            entry = None  # another document or other options under that name: start afresh
        target = self.out_dir / source.output
        targets = [target, *(self.out_dir / output for output in source.more)]
        if entry is not None and entry.state == "done" and all(t.exists() for t in targets):
            count.set_total(entry.pages or 1)
            return FileResult(source, "skipped", pages=entry.pages or 1, job=entry.job)

        job, submitted = None, False
        if entry is not None and entry.state == "submitted" and entry.job:
            job = self._existing(entry.job)
        if job is None:
            attempt = entry.attempt + 1 if entry is not None and entry.state == "failed" else 1
            entry = Entry(
                source.output, str(source.path), sha256, self.request, "submitted", attempt
            )
            try:
                job = self.client.submit(
                    document,
                    filename=source.path.name,
                    options=self.options,
                    idempotency_key=f"ocr-client-{sha256}-{self.request[:16]}-{attempt}",
                )
            except ApiError as exc:
                if not stops_the_batch(exc):  # else not the document's fault: next run
                    self.manifest.record(replace(entry, state="failed", error=str(exc)))
                raise
            entry = replace(entry, job=job.id)
            self.manifest.record(entry)
            submitted = True
        assert entry is not None
        count.update(job)
        if not job.finished:
            job = self.client.wait(
                job.id, poll_interval_s=self.poll_interval_s, on_update=count.update
            )
        if not job.succeeded:
            error = _job_failure(job)
            self.manifest.record(replace(entry, state="failed", error=error))
            return FileResult(source, "failed", job=job.id, error=error, submitted=submitted)
        pages = job.progress.pages_total if job.progress else 1
        # One read, one file a format.
        for name, path in zip(self.formats, targets):
            self._write(path, self._render(job, name))
        self.manifest.record(replace(entry, state="done", pages=pages))
        return FileResult(source, "done", pages=pages, job=job.id, submitted=submitted)

    def _existing(self, job_id: str) -> Job | None:
        """The job an earlier run submitted, or None if the service no longer has it."""
        try:
            return self.client.job(job_id)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _render(self, job: Job, fmt: str) -> bytes:
        if fmt == "json":
            return (json.dumps(job.body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        return self.client.download(job.id, fmt)

    @staticmethod
    def _write(target: Path, content: bytes) -> None:
        """Whole or not at all: a result file that exists is complete."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(content)
        os.replace(partial, target)
