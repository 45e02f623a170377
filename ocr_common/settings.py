"""One typed settings object, read from ``OCR_*`` environment variables, shared by both services."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/ocr.db"
MIB = 1024 * 1024
# The ``dpi`` a request may ask for: below, text is unreadable; above, pages are huge.
MIN_DPI = 50
MAX_DPI = 1200


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


def available_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """Cores this process may use: its CPU affinity, capped by a container's cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path(cgroup_cpu_max).read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    # A quota of 1.5 cores still keeps two engines busy part of the time: round up.
    return max(1, min(cores, -(-int(quota) // int(period))))


def _check_bind(value: str, name: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name} must look like HOST:PORT (for example 127.0.0.1:5000)")
    return value


PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every knob of the service; each field is read from ``OCR_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="OCR_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    server_url: str = "http://127.0.0.1:5001"
    api_bind: str = "127.0.0.1:5000"
    server_bind: str = "127.0.0.1:5001"
    # Engine processes in the OCR server; one per core keeps every core busy.
    workers: int = Field(default_factory=available_cores, ge=1, le=256)
    # gunicorn processes and threads of the API server.
    api_processes: int = Field(default=2, ge=1, le=64)
    api_threads: int = Field(default=8, ge=1, le=256)
    max_upload_bytes: int = Field(default=10 * MIB, ge=1024)
    max_pixels: int = Field(default=50_000_000, ge=1)
    # Pages read from one document (a PDF or multi-page TIFF), after the ``pages`` selection.
    max_pages: int = Field(default=100, ge=1, le=10_000)
    # Resolution PDF pages are rendered at when a request does not say (``dpi``).
    default_dpi: int = Field(default=300, ge=MIN_DPI, le=MAX_DPI)
    page_timeout_s: PositiveFloat = 120.0
    # An engine process that still holds more than this after a page is replaced.
    engine_max_rss_mb: int = Field(default=1024, ge=128)
    lease_s: PositiveFloat = 30.0
    max_attempts: int = Field(default=3, ge=1, le=100)
    poll_interval_s: PositiveFloat = 1.0
    shutdown_grace_s: PositiveFloat = 30.0
    # How long the API waits for the OCR server on /image-sync before answering 503.
    sync_timeout_s: PositiveFloat = 150.0
    internal_token: str | None = None
    keep_images: bool = False
    # Answer an image read before (same bytes, same owner) from its stored result.
    reuse_results: bool = True
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if "://" not in value or not scheme.startswith(("sqlite", "mysql", "mariadb")):
            raise ValueError(
                "must be a SQLAlchemy URL such as sqlite:///./data/ocr.db "
                "or mysql+pymysql://user:password@host:3306/ocr"
            )
        return value

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:5001")
        return value.rstrip("/")

    @field_validator("api_bind")
    @classmethod
    def _api_bind(cls, value: str) -> str:
        return _check_bind(value, "OCR_API_BIND")

    @field_validator("server_bind")
    @classmethod
    def _server_bind(cls, value: str) -> str:
        return _check_bind(value, "OCR_SERVER_BIND")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.page_timeout_s >= self.sync_timeout_s:
            raise ValueError(
                "OCR_SYNC_TIMEOUT_S must be larger than OCR_PAGE_TIMEOUT_S, "
                "or /image-sync gives up before the engine does"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def max_request_bytes(self) -> int:
        """Largest request body the API reads: a base64 upload plus room for the JSON around it."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; raise SettingsError naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            var = f"OCR_{field.upper()}" if err["loc"] else "settings"
            lines.append(f"{var}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
