"""The shapes of what the API answers, as pydantic models: the OpenAPI document is made of them,
and the tests check real answers against them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ocr_common.models import JobStatus
from ocr_common.options import OcrOptions


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BoundingBox(Schema):
    """A rectangle in pixels of the (upright) page, from its top-left corner."""

    left: int = Field(ge=0)
    top: int = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)


class Word(Schema):
    text: str
    confidence: float = Field(ge=0, le=100, description="Tesseract's confidence, 0-100")
    bbox: BoundingBox


class Line(Schema):
    text: str
    confidence: float = Field(ge=0, le=100)
    bbox: BoundingBox
    words: list[Word]


class Page(Schema):
    page: int = Field(ge=1, description="the page number in the document, from 1")
    width: int = Field(ge=1, description="pixels, after rendering and rotation")
    height: int = Field(ge=1)
    dpi: int | None = Field(description="the resolution the page was read at, when known")
    rotation: Literal[0, 90, 180, 270] = Field(
        description="how far clockwise the page as sent was turned from upright (detected "
        "with preprocess=auto, and undone before reading: boxes are on the upright page)"
    )
    rotation_confidence: Literal["high", "low"] | None = Field(
        default=None,
        description="preprocess=auto: high when reading confirmed which way up the page is, "
        "low when no turn read clearly better and the page was read as sent (see warnings); "
        "null without auto",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what a reader of this page should know, e.g. a low confidence orientation",
    )
    text: str
    confidence: float | None = Field(ge=0, le=100, description="mean word confidence")
    lines: list[Line]


class ErrorDetail(Schema):
    code: str = Field(description="stable, for programs")
    message: str = Field(description="for people: what went wrong and what to do")


class Progress(Schema):
    pages_done: int = Field(ge=0)
    pages_total: int = Field(ge=0)


class JobSummary(Schema):
    id: str = Field(description="UUID")
    status: JobStatus
    kind: Literal["async", "sync"] = Field(
        description="async: POST /v1/jobs or /image; sync: POST /v1/ocr or /image-sync"
    )
    api: Literal["original", "v1"] = Field(
        description="which API made the job: original (/image, /image-sync) or v1"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(ge=0)
    max_attempts: int = Field(ge=0)
    format: str | None = Field(description="the document format found in its bytes")
    options: OcrOptions | None = Field(
        description="null for jobs of the original API made before they kept their pages"
    )
    progress: Progress | None = Field(description="pages read so far")
    error: ErrorDetail | None = Field(description="why the job failed or was canceled")


class Job(JobSummary):
    text: str | None = Field(description="the text of every page (pages end in a form feed)")
    pages: list[Page] | None = Field(description="when succeeded: pages, lines, words, boxes")


class JobList(Schema):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class Problem(BaseModel):
    """An error of the v1 API (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="stable error code")
    instance: str | None = None
    field: str | None = Field(default=None, description="the request field at fault")


class JsonDocument(OcrOptions):
    """A document sent as JSON: base64 bytes and the options beside them."""

    document: str = Field(description="the file's bytes, base64 (a data: URL prefix is fine)")


# -- the original API ---------------------------------------------------------------------


class CompatError(Schema):
    """An error of the original API."""

    error: ErrorDetail


class CompatImage(BaseModel):
    image_data: str | list[str] | None = Field(
        default=None, description="base64 image, or a list of them"
    )
    image_data_list: list[str] | None = Field(
        default=None, description='a list of base64 images (when there is no "image_data")'
    )


class CompatText(Schema):
    text: str | list[str]


class CompatTaskId(Schema):
    task_id: str | list[str]


class CompatResult(Schema):
    task_id: str | None = Field(description="the text, or null while the task is not done")
    text: str | None = Field(
        default=None, description="the same, when the id came in the query string"
    )


class CompatAllImages(RootModel[dict[str, str | None]]):
    """Every task id and its text (null while not done), oldest first."""


class Status(BaseModel):
    status: str
