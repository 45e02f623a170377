"""What a v1 request may ask of Tesseract, parsed and checked once, before anything is stored."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from .documents import Document, check_document
from .errors import BadRequest, PayloadTooLarge, json_kind, json_text
from .settings import MAX_DPI, MIN_DPI, Settings

DEFAULT_LANG = "eng"
DEFAULT_PSM = 3
# Tesseract's page segmentation modes that read text (`tesseract --help-psm`): not 0, which
# only finds the orientation, nor 2, which Tesseract does not implement.
PSM_MODES = (1, *range(3, 14))
# Bounds on what a request may send (each fits its column; see docs/api.md "Options").
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


class Preprocess(enum.StrEnum):
    """What is done to a page before Tesseract reads it."""

    NONE = "none"  # the pixels as uploaded
    AUTO = "auto"  # EXIF orientation, grayscale, verified turn upright, small text enlarged


PAGES_SCHEMA = {
    "anyOf": [
        {"type": "string", "examples": ["1-3,7"]},
        {"type": "array", "items": {"type": "integer", "minimum": 1}},
        {"type": "null"},
    ]
}


class OcrOptions(BaseModel):
    """A v1 request's options, declared once: the parser, the OpenAPI parameters, the JSON
    request schema and the response's ``options`` are all made from this model. ``pages`` is
    None for every page, else 1-based page numbers.

    The validators raise the API's own errors (a 400 that names the field, a 413 for too many
    pages): pydantic passes those through as they are.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    psm: int = Field(
        default=DEFAULT_PSM,
        description="page segmentation mode (3: automatic; 6: one block; 7: one line; 11: "
        "sparse text)",
        json_schema_extra={"enum": list[JsonValue](PSM_MODES)},
    )
    char_whitelist: str | None = Field(
        default=None, max_length=MAX_CHARSET_CHARS, description="read only these characters"
    )
    char_blacklist: str | None = Field(
        default=None, max_length=MAX_CHARSET_CHARS, description="never read these characters"
    )
    dpi: int | None = Field(
        default=None,
        ge=MIN_DPI,
        le=MAX_DPI,
        description="resolution PDF pages are rendered at (default OCR_DEFAULT_DPI, 300)",
    )
    pages: Annotated[tuple[int, ...] | None, WithJsonSchema(PAGES_SCHEMA)] = Field(
        default=None,
        description='pages of a PDF or TIFF to read, e.g. "1-3,7" (default: every page)',
    )
    preprocess: Annotated[
        Preprocess, WithJsonSchema({"type": "string", "enum": [p.value for p in Preprocess]})
    ] = Field(
        default=Preprocess.NONE,
        description="auto: grayscale, sideways or upside-down pages turned upright (verified "
        "by reading), small text in grey images enlarged where it reads better",
    )
    lang: str = Field(
        default=DEFAULT_LANG, description="installed language(s), e.g. eng (the default)"
    )

    @field_validator("psm", mode="before")
    @classmethod
    def _check_psm(cls, value: object) -> int:
        number = _integer("psm", value)
        if number not in PSM_MODES:
            raise invalid_option(
                "psm",
                f"{number} is not a page segmentation mode that reads text; use one of "
                + ", ".join(str(mode) for mode in PSM_MODES),
            )
        return number

    @field_validator("char_whitelist", "char_blacklist", mode="before")
    @classmethod
    def _check_charset(cls, value: object, info: ValidationInfo) -> str | None:
        return _charset(str(info.field_name), value)

    @field_validator("dpi", mode="before")
    @classmethod
    def _check_dpi(cls, value: object) -> int | None:
        if value is None:
            return None
        number = _integer("dpi", value)
        if not MIN_DPI <= number <= MAX_DPI:
            raise invalid_option("dpi", f"{number} is outside {MIN_DPI}..{MAX_DPI}")
        return number

    @field_validator("pages", mode="before")
    @classmethod
    def _check_pages(cls, value: object, info: ValidationInfo) -> tuple[int, ...] | None:
        if isinstance(value, list | tuple):
            odd = [
                item for item in value if isinstance(item, bool) or not isinstance(item, int | str)
            ]
            if odd:
                raise invalid_option(
                    "pages",
                    f"an array of pages holds {json_text(odd[0])}; give numbers or ranges"
                    ' such as [1, "3-5"]',
                )
            value = ",".join(map(str, value))
        return parse_pages(value, _context(info).get("max_pages"))

    @field_validator("preprocess", mode="before")
    @classmethod
    def _check_preprocess(cls, value: object) -> Preprocess:
        try:
            return Preprocess(str(value).strip().lower())
        except ValueError:
            raise invalid_option(
                "preprocess", f"{json_text(value)} is not one of: none, auto"
            ) from None

    @field_validator("lang", mode="before")
    @classmethod
    def _check_lang(cls, value: object, info: ValidationInfo) -> str:
        languages = _context(info).get("languages")
        if languages is None:  # stored options, checked when they were accepted
            return str(value)
        return check_lang(value, languages)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_values(self) -> dict[str, str]:
        """The options as the strings a request sends, which ``parse_options`` reads back the
        same (the API sends them to the OCR server so)."""
        return {
            key: ",".join(map(str, value)) if key == "pages" else str(value)
            for key, value in self.to_dict().items()
            if value is not None
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def render_dpi(self, default_dpi: int) -> int:
        return self.dpi if self.dpi is not None else default_dpi


OPTION_FIELDS = tuple(OcrOptions.model_fields)


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def invalid_option(field: str, message: str) -> BadRequest:
    """A 400 that names the request field at fault (an option, or a query parameter)."""
    return BadRequest(f'"{field}": {message}', code="invalid_option", field=field)


def is_decimal(text: str) -> bool:
    """ASCII digits only, and few enough for int(): str.isdigit() also takes "²" and a
    5,000-digit number, both of which int() refuses."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def _integer(field: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and is_decimal(value.strip().lstrip("+-")):
        return int(value.strip())
    raise invalid_option(field, f"must be an integer, not {json_text(value)}")


def _charset(field: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_option(field, f"must be a string of characters, not {json_kind(value)}")
    if len(value) > MAX_CHARSET_CHARS:
        raise invalid_option(field, f"has {len(value)} characters; at most {MAX_CHARSET_CHARS}")
    if any(ch in value for ch in "\x00\n\r"):
        raise invalid_option(field, "must not hold NUL or line breaks")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise invalid_option(field, "must be text (it holds a lone surrogate)")
    return value


def parse_pages(value: object, max_pages: int | None) -> tuple[int, ...] | None:
    """``"1-3,7"`` → (1, 2, 3, 7): sorted, without repeats; at most ``max_pages`` pages."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise invalid_option(
            "pages", f'must be a page range such as "1-3,7", not {json_text(value)}'
        )
    if len(value) > MAX_PAGES_CHARS:
        raise invalid_option("pages", f"has {len(value)} characters; at most {MAX_PAGES_CHARS}")
    pages: set[int] = set()
    for part in value.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not is_decimal(first) or (dash and not is_decimal(last)):
            raise invalid_option("pages", f'{part!r} is not a page or a range; write e.g. "1-3,7"')
        low, high = int(first), int(last) if dash else int(first)
        if low < 1 or high < low:
            raise invalid_option("pages", f"{part!r} is not a range of pages counted from 1")
        if max_pages is not None and high - low + 1 + len(pages) > max_pages:
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
    languages: Callable[[], Collection[str]],
    max_pages: int,
) -> OcrOptions:
    """Read the options out of query, form or JSON values (other keys are left alone; an empty
    value is the default); a 400 names the bad field."""
    given = {key: values[key] for key in OPTION_FIELDS if values.get(key) not in (None, "")}
    context = {"languages": languages, "max_pages": max_pages}
    try:
        return OcrOptions.model_validate(given, context=context)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "options"
        raise invalid_option(field, error["msg"]) from None


def check_submission(
    data: bytes,
    values: Mapping[str, object],
    settings: Settings,
    languages: Callable[[], Collection[str]],
) -> tuple[OcrOptions, Document]:
    """The options and the document of a v1 request, checked against the configured limits."""
    options = parse_options(values, languages=languages, max_pages=settings.max_pages)
    return options, check_document(
        data,
        wanted_pages=options.pages,
        dpi=options.render_dpi(settings.default_dpi),
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_pages=settings.max_pages,
    )


def check_lang(value: object, languages: Callable[[], Collection[str]]) -> str:
    """``eng`` or several installed languages joined by ``+`` or a space (a query string's
    ``+``), each once; the bounds first, as ``languages`` may read the database."""
    wanted = value.replace("+", " ").split() if isinstance(value, str) else []
    if wanted == [DEFAULT_LANG]:
        # Always there: the OCR server does not start without it.
        return DEFAULT_LANG
    if not isinstance(value, str) or not value.strip():
        readable = sorted(set(languages()) - NOT_LANGUAGES)
        raise invalid_option("lang", f"must be a language code such as eng; installed: {readable}")
    if len(value) > MAX_LANG_CHARS:
        raise invalid_option("lang", f"has {len(value)} characters; at most {MAX_LANG_CHARS}")
    if len(wanted) > MAX_LANG_PARTS:
        raise invalid_option("lang", f"names {len(wanted)} languages; at most {MAX_LANG_PARTS}")
    repeated = sorted({lang for lang in wanted if wanted.count(lang) > 1})
    if repeated:
        raise invalid_option("lang", f"names {', '.join(map(repr, repeated))} more than once")
    readable = sorted(set(languages()) - NOT_LANGUAGES)
    missing = [lang for lang in wanted if lang not in readable]
    if missing:
        raise invalid_option(
            "lang",
            f"{', '.join(repr(m[:20]) for m in missing)} not installed; installed: "
            + ", ".join(readable),
        )
    return "+".join(wanted)


# A job of the original API: the first page (of a multi-page TIFF, say) with every default.
ORIGINAL_API_OPTIONS = OcrOptions(pages=(1,))
