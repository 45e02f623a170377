"""Python client of the OCR service, and the ``ocr-client`` command built on it."""

from .batch import Batch, BatchReport, FileResult, Source, collect_sources
from .client import (
    DEFAULT_URL,
    ApiError,
    ClientError,
    Job,
    NotTheService,
    OcrClient,
    Progress,
    RetryPolicy,
    Stopped,
    Unreachable,
)

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Batch",
    "BatchReport",
    "ClientError",
    "FileResult",
    "Job",
    "NotTheService",
    "OcrClient",
    "Progress",
    "RetryPolicy",
    "Source",
    "Stopped",
    "Unreachable",
    "collect_sources",
]
