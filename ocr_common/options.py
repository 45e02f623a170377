"""What a v1 request may ask of Tesseract, parsed and checked once, before anything is stored."""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BadRequest, PayloadTooLarge
from .settings import MAX_DPI, MIN_DPI

DEFAULT_LANG = "eng"
DEFAULT_PSM = 3
# Tesseract's page segmentation modes that read text (0, "orientation only", reads none).
PSM_MODES = {
    1: "automatic page segmentation with orientation and script detection",
    3: "fully automatic page segmentation (the default)",
    4: "a single column of text of variable sizes",
    5: "a single uniform block of vertically aligned text",
    6: "a single uniform block of text",
    7: "a single text line",
    8: "a single word",
    9: "a single word in a circle",
    10: "a single character",
    11: "sparse text: as much text as possible, in no particular order",
    12: "sparse text with orientation and script detection",
    13: "a raw line, bypassing Tesseract's hacks",
}
# Bounds on what a request may send (each fits its column; see README "Options").
MAX_CHARSET_CHARS = 1000
# "eng+deu+...": Tesseract loads a model per part; names such as chi_sim_vert are 12 characters.
MAX_LANG_PARTS = 8
MAX_LANG_CHARS = 200
# "1-3,7,...": room for a long list of single pages, but no megabyte of commas.
MAX_PAGES_CHARS = 4000
# More digits than any option needs (and far below int()'s 4300-digit limit).
MAX_DIGITS = 9
# Names Tesseract installs beside the languages but that read no text.
NOT_LANGUAGES = frozenset({"osd", "equ"})
OPTION_FIELDS = ("psm", "char_whitelist", "char_blacklist", "dpi", "pages", "preprocess", "lang")


class Preprocess(enum.StrEnum):
    """What is done to a page before Tesseract reads it."""

    NONE = "none"  # the pixels as uploaded
    AUTO = "auto"  # EXIF orientation, grayscale, verified turn upright, small text enlarged


@dataclass(frozen=True)
class OcrOptions:
    """A v1 request's options; ``pages`` is None for every page, else 1-based page numbers."""

    psm: int = DEFAULT_PSM
    char_whitelist: str | None = None
    char_blacklist: str | None = None
    dpi: int | None = None
    pages: tuple[int, ...] | None = None
    preprocess: Preprocess = Preprocess.NONE
    lang: str = DEFAULT_LANG

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pages"] = list(self.pages) if self.pages is not None else None
        out["preprocess"] = self.preprocess.value
        return out

    def to_values(self) -> dict[str, str]:
        """The options as the strings a request sends, which ``parse_options`` reads back the
        same (the API sends them to the OCR server so)."""
        query = {}
        for key, value in self.to_dict().items():
            if value is None:
                continue
            query[key] = ",".join(map(str, value)) if key == "pages" else str(value)
        return query

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OcrOptions:
        """Options stored by ``to_dict`` (already checked when they were accepted)."""
        pages = data.get("pages")
        return cls(
            psm=int(data.get("psm", DEFAULT_PSM)),
            char_whitelist=data.get("char_whitelist"),
            char_blacklist=data.get("char_blacklist"),
            dpi=data.get("dpi"),
            pages=tuple(int(p) for p in pages) if pages is not None else None,
            preprocess=Preprocess(data.get("preprocess", Preprocess.NONE.value)),
            lang=str(data.get("lang", DEFAULT_LANG)),
        )

    def render_dpi(self, default_dpi: int) -> int:
        return self.dpi if self.dpi is not None else default_dpi


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest(f'"{field}": {message}', code="invalid_option", field=field)


def is_decimal(text: str) -> bool:
    """ASCII digits only, and few enough for int(): str.isdigit() also takes "²" and a
    5,000-digit number, both of which int() refuses."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def _integer(field: str, value: object) -> int:
    if isinstance(value, bool):
        raise _invalid(field, f"must be an integer, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and is_decimal(value.strip().lstrip("+-")):
        return int(value.strip())
    raise _invalid(field, f"must be an integer, not {str(value)[:40]!r}")


def _charset(field: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(field, f"must be a string of characters, not {type(value).__name__}")
    if len(value) > MAX_CHARSET_CHARS:
        raise _invalid(field, f"has {len(value)} characters; at most {MAX_CHARSET_CHARS}")
    if any(ch in value for ch in "\x00\n\r"):
        raise _invalid(field, "must not hold NUL or line breaks")
    if not _is_utf8(value):
        raise _invalid(field, "must be text (it holds a lone surrogate)")
    return value


def _is_utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_pages(value: object, max_pages: int) -> tuple[int, ...] | None:
    """``"1-3,7"`` → (1, 2, 3, 7): sorted, without repeats; at most ``max_pages`` pages."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _invalid("pages", f'must be a page range such as "1-3,7", not {str(value)[:40]!r}')
    if len(value) > MAX_PAGES_CHARS:
        raise _invalid("pages", f"has {len(value)} characters; at most {MAX_PAGES_CHARS}")
    pages: set[int] = set()
    for part in value.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not is_decimal(first) or (dash and not is_decimal(last)):
            raise _invalid("pages", f'{part!r} is not a page or a range; write e.g. "1-3,7"')
        low, high = int(first), int(last) if dash else int(first)
        if low < 1 or high < low:
            raise _invalid("pages", f"{part!r} is not a range of pages counted from 1")
        if high - low + 1 + len(pages) > max_pages:
            raise PayloadTooLarge(
                f'"pages" selects more than {max_pages} pages, the limit per document '
                "(OCR_MAX_PAGES)",
                code="too_many_pages",
                field="pages",
            )
        pages.update(range(low, high + 1))
    return tuple(sorted(pages))


def parse_options(
    values: Mapping[str, object],
    *,
    languages: Collection[str],
    max_pages: int,
) -> OcrOptions:
    """Read the options out of query, form or JSON values; a 400 names the bad field.

    Unknown keys are left alone (the caller's own fields travel in the same mapping).
    """
    options: dict[str, Any] = {}
    if (psm := values.get("psm")) not in (None, ""):
        number = _integer("psm", psm)
        if number not in PSM_MODES:
            raise _invalid(
                "psm",
                f"{number} is not a page segmentation mode that reads text; use one of "
                + ", ".join(str(mode) for mode in PSM_MODES),
            )
        options["psm"] = number
    options["char_whitelist"] = _charset("char_whitelist", values.get("char_whitelist"))
    options["char_blacklist"] = _charset("char_blacklist", values.get("char_blacklist"))
    if (dpi := values.get("dpi")) not in (None, ""):
        number = _integer("dpi", dpi)
        if not MIN_DPI <= number <= MAX_DPI:
            raise _invalid("dpi", f"{number} is outside {MIN_DPI}..{MAX_DPI}")
        options["dpi"] = number
    options["pages"] = parse_pages(values.get("pages"), max_pages)
    if (preprocess := values.get("preprocess")) not in (None, ""):
        try:
            options["preprocess"] = Preprocess(str(preprocess).strip().lower())
        except ValueError:
            raise _invalid(
                "preprocess", f"{str(preprocess)[:40]!r} is not one of: none, auto"
            ) from None
    if (lang := values.get("lang")) not in (None, ""):
        options["lang"] = check_lang(lang, languages)
    return OcrOptions(**options)


def check_lang(value: object, languages: Collection[str]) -> str:
    """``eng`` or several installed languages joined by ``+`` (``eng+deu``), each once."""
    readable = sorted(set(languages) - NOT_LANGUAGES)
    if not isinstance(value, str) or not value.strip():
        raise _invalid("lang", f"must be a language code such as eng; installed: {readable}")
    if len(value) > MAX_LANG_CHARS:
        raise _invalid("lang", f"has {len(value)} characters; at most {MAX_LANG_CHARS}")
    wanted = value.strip().split("+")
    if len(wanted) > MAX_LANG_PARTS:
        raise _invalid("lang", f"names {len(wanted)} languages; at most {MAX_LANG_PARTS}")
    repeated = sorted({lang for lang in wanted if wanted.count(lang) > 1})
    if repeated:
        raise _invalid("lang", f"names {', '.join(map(repr, repeated))} more than once")
    missing = [lang for lang in wanted if lang not in readable]
    if missing:
        raise _invalid(
            "lang",
            f"{', '.join(repr(m[:20]) for m in missing)} not installed; installed: "
            + ", ".join(readable),
        )
    return "+".join(wanted)
