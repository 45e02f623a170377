"""``ocr-client``: read a folder of documents with a progress bar, or one document now.

    ocr-client run FILES_OR_DIRS... --out DIR [--format text|json|hocr|tsv|alto|pdf[,...]]
                   [--concurrency N] [--include GLOB ...]
    ocr-client sync FILE [--format text|json|hocr|tsv|alto|pdf]

``--url`` and ``--api-key`` default to ``OCR_URL`` and ``OCR_API_KEY``; the URL is checked first
(one line says what is wrong with it). ``run`` reads the files whose first bytes are an image's
or a PDF's (``--include`` chooses by name instead) and keeps a manifest in DIR: run it again and
it skips what is done and waits for what it had submitted. It exits 1 listing the documents
that failed or when stopped (service gone, API key refused), 2 on a wrong command line, 130
when interrupted (``sync`` too); docs/client.md lists them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .batch import RESULT_SUFFIXES, Batch, BatchReport, FileResult, collect_sources, parse_formats
from .client import (
    DEFAULT_URL,
    ApiError,
    ClientError,
    OcrClient,
    OptionValue,
    RetryPolicy,
    Stopped,
    Unreachable,
    check_url,
)

EXIT_FAILED = 1
EXIT_USAGE = 2  # what argparse exits with on a bad option: the command line is wrong
EXIT_INTERRUPTED = 130
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRY_FOR_S = 120.0
# The API's names the command sends (the client imports no server code; a test checks them
# against the service's /openapi.json): the OCR options it offers, as form fields, and the
# values of preprocess.
OPTIONS = ("psm", "lang", "pages", "preprocess", "dpi")
PREPROCESS = ("none", "auto")


class RateColumn(ProgressColumn):
    """Pages per second, over rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  – pages/s" if speed is None else f"{speed:5.2f} pages/s")


class ProgressBar:
    """Pages read of pages known, rate and ETA on stderr; silent when stderr is no terminal."""

    def __init__(self, console: Console, files: int):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]pages"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("files {task.fields[finished]}/{task.fields[files]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self.finished = 0
        self.task = self.progress.add_task("pages", total=files, files=files, finished=0)

    def add_pages(self, count: int) -> None:
        if count:
            total = self.progress.tasks[0].total or 0
            self.progress.update(self.task, total=total + count)

    def pages_done(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def file_finished(self, result: FileResult) -> None:
        self.finished += 1
        self.progress.update(self.task, finished=self.finished)
        if result.outcome == "failed":
            self.console.print(f"[red]failed[/red] {result.source.path}: {result.error}")


def _options(args: argparse.Namespace) -> dict[str, OptionValue]:
    return {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}


def _client(args: argparse.Namespace) -> OcrClient:
    return OcrClient(args.url, api_key=args.api_key, retry=RetryPolicy.patient(args.retry_for))


# Files left out named in the line that says so; more are counted.
SHOWN_LEFT_OUT = 5


def left_out_line(left_out: list[Path]) -> str:
    names = ", ".join(str(path) for path in left_out[:SHOWN_LEFT_OUT])
    more = f" and {len(left_out) - SHOWN_LEFT_OUT} more" if len(left_out) > SHOWN_LEFT_OUT else ""
    return (
        f"ocr-client: skipped {len(left_out)} file(s) whose first bytes are not an image's or a "
        f"PDF's: {names}{more} (--include GLOB reads files by name instead)"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    def skipped(path: Path, why: str) -> None:
        console.print(f"ocr-client: skipped {path}: {why}", markup=False, highlight=False)

    sources, left_out = collect_sources(
        [Path(p) for p in args.inputs],
        args.format,
        exclude=Path(args.out),
        include=args.include,
        on_skip=skipped,
    )
    if left_out:
        console.print(left_out_line(left_out), markup=False, highlight=False)
    if not sources:
        what = "matches --include" if args.include else "is an image or a PDF"
        raise ClientError(f"nothing to read: no file named {what}")
    client = _client(args)
    client.check_service()
    bar = ProgressBar(console, len(sources))
    batch = Batch(
        client,
        Path(args.out),
        fmt=args.format,
        options=_options(args),
        concurrency=args.concurrency,
        reporter=bar,
    )
    try:
        with bar.progress:
            report = batch.run(sources)
    except (KeyboardInterrupt, Stopped):
        console.print(
            "ocr-client: interrupted; run the same command again to resume "
            f"(manifest: {batch.manifest.path})",
            markup=False,
        )
        return EXIT_INTERRUPTED
    return summarize(report, console, args)


def summarize(report: BatchReport, console: Console, args: argparse.Namespace) -> int:
    done, skipped, failed = report.count("done"), report.count("skipped"), report.failed
    total = len(report.results) + len(report.not_read)
    not_read = f", {len(report.not_read)} not read" if report.stopped_by is not None else ""
    console.print(
        f"ocr-client: {done + skipped} of {total} documents done "
        f"({report.pages} pages; {skipped} done before, {report.submitted} submitted now), "
        f"{len(failed)} failed{not_read}",
        markup=False,
        highlight=False,
    )
    for result in failed:
        console.print(f"  FAILED {result.source.path}: {result.error}", markup=False)
    if report.stopped_by is not None:
        console.print(
            f"ocr-client: stopped: {why_stopped(report.stopped_by, args)}; run the same "
            f"command again to read the {len(report.not_read)} document(s) not read",
            markup=False,
            highlight=False,
        )
    return EXIT_FAILED if failed or report.stopped_by is not None else 0


def why_stopped(exc: ClientError, args: argparse.Namespace) -> str:
    """What stopped a batch (``stops_the_batch``), in a few words."""
    if isinstance(exc, Unreachable):
        return (
            f"no OCR service answers at {args.url} any more (tried for {args.retry_for:g} s: "
            f"{exc.reason})"
        )
    if isinstance(exc, ApiError) and not exc.refuses_the_key:
        return f"the service is still busy after {args.retry_for:g} s ({exc})"
    return explain(exc, args)


def explain(exc: ClientError, args: argparse.Namespace) -> str:
    """An error in one line; a refused API key with the options that set it."""
    if isinstance(exc, ApiError) and exc.status == 401:
        given = "refused the API key given" if args.api_key else "wants an API key"
        return f"the service {given} ({exc}): set --api-key or OCR_API_KEY"
    if isinstance(exc, ApiError) and exc.refuses_the_key:
        lockout = "" if exc.retry_after_s is None else f" for {exc.retry_after_s:g} s"
        return (
            f"the service refuses this address{lockout} after too many wrong API keys ({exc}): "
            "set the right one with --api-key or OCR_API_KEY"
        )
    return str(exc)


def sync(args: argparse.Namespace, console: Console) -> int:
    path = Path(args.file)
    document = path.read_bytes()
    client = _client(args)
    client.check_service()
    if "," in args.format:
        raise ClientError("sync writes one format to stdout: use run --out DIR for several")
    if args.format == "pdf":
        data = client.ocr_bytes(document, filename=path.name, options=_options(args), fmt="pdf")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    text = client.ocr(document, filename=path.name, options=_options(args), fmt=args.format)
    sys.stdout.write(text)
    return 0


def _formats(value: str) -> str:
    try:
        return ",".join(parse_formats(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(value: str) -> float:
    """A time in seconds, 0 or more (0: no retry)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{value!r}: give 0 or more seconds (0: do not retry)")
    return seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the API server (OCR_URL; default {DEFAULT_URL})")
    common.add_argument(
        "--api-key",
        default=os.environ.get("OCR_API_KEY") or None,
        help="the API key, when the service has keys on (OCR_API_KEY)",
    )
    common.add_argument(
        "--format",
        type=_formats,
        default="text",
        help=f"what to write: {', '.join(RESULT_SUFFIXES)}; run takes several with commas "
        "(text,pdf: one read, one file each)",
    )
    common.add_argument("--psm", type=int, help="page segmentation mode (3 automatic, 6 block)")
    common.add_argument("--lang", help="installed language(s), e.g. eng")
    common.add_argument("--pages", help='pages of a PDF or TIFF, e.g. "1-3,7"')
    common.add_argument("--preprocess", choices=PREPROCESS, help="auto: turn pages upright")
    common.add_argument("--dpi", type=int, help="resolution PDF pages are rendered at")
    common.add_argument(
        "--retry-for",
        type=_seconds,
        default=DEFAULT_RETRY_FOR_S,
        metavar="SECONDS",
        help="how long to keep retrying a busy (429/503) or unreachable service, the first "
        f"call too (default {DEFAULT_RETRY_FOR_S:g})",
    )
    parser = argparse.ArgumentParser(prog="ocr-client", description="Client of the OCR service")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run", parents=[common], help="read files and folders into --out, with a progress bar"
    )
    run_parser.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS")
    run_parser.add_argument("--out", required=True, metavar="DIR", help="where results go")
    run_parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help='read the files whose path matches GLOB (e.g. "*.png"; again for more), whatever '
        "their bytes; without it, the files whose first bytes are an image's or a PDF's",
    )
    run_parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"documents in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    sync_parser = commands.add_parser(
        "sync", parents=[common], help="read one document now and print its text"
    )
    sync_parser.add_argument("file", metavar="FILE")
    args = parser.parse_args(argv)
    command_parser = run_parser if args.command == "run" else sync_parser
    given = "--url" if args.url is not None else "OCR_URL"
    args.url = args.url or os.environ.get("OCR_URL") or DEFAULT_URL
    try:
        check_url(args.url)
    except ValueError as exc:
        command_parser.error(f"{given}: {exc}")
    if getattr(args, "concurrency", 1) < 1:
        parser.error("--concurrency must be at least 1")
    if args.command == "run":
        same = _input_folder_at(args.out, args.inputs)
        if same is not None:
            command_parser.error(
                f"--out {args.out} is the input folder {same}: each run would read the results "
                f"of the last as new documents; write them to a folder of their own, e.g. "
                f"--out {Path(same) / 'text'} (a folder under an input folder is left out of it)"
            )
    return args


def _input_folder_at(out: str, inputs: list[str]) -> str | None:
    """The input folder that ``out`` is (the same folder, however it is written), if any: only
    a folder under an input folder is left out of the walk, not the input folder itself."""
    target = Path(out).resolve()
    for given in inputs:
        if Path(given).is_dir() and Path(given).resolve() == target:
            return given
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # soft_wrap: a message is one line however narrow the terminal (or 80 columns when none).
    console = Console(stderr=True, soft_wrap=True)
    try:
        return run(args, console) if args.command == "run" else sync(args, console)
    except ClientError as exc:
        console.print(f"ocr-client: {explain(exc, args)}", markup=False)
        return EXIT_FAILED
    except OSError as exc:
        console.print(f"ocr-client: {exc}", markup=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Ctrl-C outside a batch (sync, the check of --url): nothing to resume.
        console.print("ocr-client: interrupted", markup=False)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
