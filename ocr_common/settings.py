"""One typed settings object, read from ``OCR_*`` environment variables, shared by both services."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParsingError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import BadRequest, SettingsError
from .webhooks import (
    DEFAULT_RETRY_SCHEDULE,
    AddressPolicy,
    check_webhook_url,
    parse_retry_schedule,
    parse_secrets,
)

DEFAULT_DATABASE_URL = "sqlite:///./data/ocr.db"
# Beside the SQLite file: documents of `make run` stay on this machine, under ./data/blobs.
DEFAULT_BLOB_URL = "file:./data/blobs"
# The databases the job queue runs on, and the driver each is reached through (the only one
# installed): a URL that names none gets it.
DATABASE_DRIVERS = {"sqlite": "pysqlite", "mysql": "pymysql", "mariadb": "pymysql"}
SUPPORTED_DATABASES = (
    "MySQL 8 / MariaDB >= 10.6 (mysql+pymysql://user:password@host:3306/ocr) "
    "or SQLite (sqlite:///./data/ocr.db)"
)
MIB = 1024 * 1024
# The ``dpi`` a request may ask for: below, text is unreadable; above, pages are huge.
MIN_DPI = 50
MAX_DPI = 1200


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


def _port(bind: str) -> int:
    return int(bind.rpartition(":")[2])


# A name of OCR_ALLOWED_HOSTS: DNS labels (letters, digits, '-', '_'), dot-separated; a leading
# dot stands for the name and every name below it.
_HOST_NAME = re.compile(
    r"\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?"
)


def parse_allowed_hosts(spec: str) -> frozenset[str]:
    """The names of "name, .domain, *" (lower case, without a final dot)."""
    names = set()
    for entry in filter(None, (part.strip().lower() for part in spec.split(","))):
        if entry != "*" and not _HOST_NAME.fullmatch(entry):
            raise ValueError(
                "must be comma-separated host names without ports or schemes (for example "
                "ocr.example.com,ocr-api), .example.com for a domain and its subdomains, or *"
            )
        names.add(entry.rstrip("."))
    return frozenset(names)


# A time in seconds: finite, above 0, at most a day. A larger one is a slip that would
# overflow the socket and database timeouts made from it (OCR_LEASE_S=1e9 made every claim
# fail with EINVAL; inf, a traceback).
DAY_S = 86_400.0
Seconds = Annotated[float, Field(gt=0, le=DAY_S, allow_inf_nan=False)]


class Settings(BaseSettings):
    """Every knob of the service; each field is read from ``OCR_<FIELD NAME>``, and the table of
    docs/settings.md says what it does."""

    model_config = SettingsConfigDict(env_prefix="OCR_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    server_url: str = "http://127.0.0.1:5001"
    api_bind: str = "127.0.0.1:5000"
    server_bind: str = "127.0.0.1:5001"
    allowed_hosts: str = ""
    metrics_bind: str | None = None
    workers: int = Field(default_factory=available_cores, ge=1, le=256)
    api_processes: int = Field(default=2, ge=1, le=64)
    api_threads: int = Field(default=8, ge=1, le=256)
    max_upload_bytes: int = Field(default=10 * MIB, ge=1024)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_pages: int = Field(default=100, ge=1, le=10_000)
    default_dpi: int = Field(default=300, ge=MIN_DPI, le=MAX_DPI)
    page_timeout_s: Seconds = 120.0
    render_timeout_s: Seconds = 30.0
    engine_max_rss_mb: int = Field(default=1024, ge=128)
    engine_max_memory_mb: int = Field(default=1536, ge=256)
    # Kept alive by heartbeats: at most an hour (TCP keep-alive takes up to 9 hours for half).
    lease_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    max_attempts: int = Field(default=3, ge=1, le=100)
    # Below 10 ms an idle OCR server would query the database thousands of times a second.
    poll_interval_s: float = Field(default=1.0, ge=0.01, le=60, allow_inf_nan=False)
    shutdown_grace_s: Seconds = 30.0
    sync_timeout_s: Seconds = 150.0
    stale_workers_s: float = Field(default=30.0, ge=1, le=DAY_S, allow_inf_nan=False)
    tessdata_dir: Path | None = None
    sync_max_pages: int = Field(default=10, ge=1, le=10_000)
    internal_token: SecretStr | None = None
    api_keys: SecretStr | None = None
    rate_limit: str | None = None
    auth_failure_limit: str | None = "20/minute"
    max_batch: int = Field(default=32, ge=1, le=1000)
    max_queued_per_key: int = Field(default=10_000, ge=0)
    startup_wait_s: float = Field(default=60.0, ge=0, le=DAY_S, allow_inf_nan=False)
    rate_limit_storage: str = "memory://"
    result_ttl_days: float = Field(default=0, ge=0, le=36_500, allow_inf_nan=False)
    # Documents stay in the blob store with their finished job (until it is deleted or
    # expires): format=pdf and page images are made from them. Off: let go once read.
    keep_images: bool = True
    # Where documents live (docs/operations.md "Blob store"): file:PATH or s3://BUCKET/PREFIX.
    blob_url: str = DEFAULT_BLOB_URL
    # A stored document no job row claims is deleted once it is this old: the time an intake
    # may take between storing a document and committing its job.
    blob_grace_s: float = Field(default=3600.0, ge=1, le=30 * DAY_S, allow_inf_nan=False)
    reuse_results: bool = True
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    webhook_secret: SecretStr | None = None
    webhook_retry_schedule: str = DEFAULT_RETRY_SCHEDULE
    webhook_allow: str | None = None
    webhook_defaults: dict[str, str] = Field(default_factory=dict)
    webhook_concurrency: int = Field(default=100, ge=1, le=10_000)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            scheme = make_url(value).drivername
        except ArgumentError:
            raise ValueError(f"must be a SQLAlchemy URL of {SUPPORTED_DATABASES}") from None
        backend, _, driver = scheme.lower().partition("+")
        if backend in ("postgresql", "postgres"):
            raise ValueError(f"PostgreSQL is not supported; use {SUPPORTED_DATABASES}")
        if backend not in DATABASE_DRIVERS:
            raise ValueError(f"{backend!r} databases are not supported; use {SUPPORTED_DATABASES}")
        wanted = DATABASE_DRIVERS[backend]
        if driver and driver != wanted:
            raise ValueError(
                f"the driver {driver!r} is not installed; use {backend}+{wanted}:// "
                f"({SUPPORTED_DATABASES})"
            )
        # mysql:// means MySQLdb to SQLAlchemy, which is not installed: PyMySQL is.
        canonical = backend if backend == "sqlite" and not driver else f"{backend}+{wanted}"
        return canonical + value[len(scheme) :]

    @field_validator("blob_url")
    @classmethod
    def _blob_url(cls, value: str) -> str:
        from .blobs import open_store

        open_store(value)
        return value

    @field_validator("tessdata_dir", mode="before")
    @classmethod
    def _tessdata_dir(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:5001")
        return value.rstrip("/")

    @field_validator("api_bind", "server_bind", "metrics_bind")
    @classmethod
    def _bind(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.field_name == "metrics_bind":
            return None  # unset: /metrics is served on OCR_API_BIND
        return _check_bind(value or "", f"OCR_{str(info.field_name).upper()}")

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: str) -> str:
        parse_allowed_hosts(value)
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty is unset: compose passes OCR_API_KEYS through from a .env that may leave it out.
        if value is None or not value.get_secret_value().strip():
            return None
        parse_api_keys(value.get_secret_value())
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        if value:
            try:
                _limit_amounts(value)
            except ValueError:
                raise ValueError('must look like "60/minute" or "10/second;1000/hour"') from None
        return value or None

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty (compose passes ${OCR_WEBHOOK_SECRET:-}) is unset: no webhooks.
        if value is None or not value.get_secret_value().strip():
            return None
        parse_secrets(value.get_secret_value())
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _webhook_retry_schedule(cls, value: str) -> str:
        parse_retry_schedule(value)
        return value

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow(cls, value: str | None) -> str | None:
        AddressPolicy.parse(value)
        return value or None

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
        if self.metrics_bind and _port(self.metrics_bind) == _port(self.api_bind):
            raise ValueError(
                "OCR_METRICS_BIND must use another port than OCR_API_BIND: the API tells "
                "a scrape from a request by the port it came to"
            )
        if self.engine_max_rss_mb >= self.engine_max_memory_mb:
            raise ValueError(
                "OCR_ENGINE_MAX_RSS_MB (recycle an engine after a page) must be smaller than "
                "OCR_ENGINE_MAX_MEMORY_MB (the hard ceiling during a page)"
            )
        owners = set(self.api_key_owners.values())
        for owner, url in self.webhook_defaults.items():
            if owner not in owners:
                raise ValueError(
                    f"OCR_WEBHOOK_DEFAULTS names {owner[:64]!r}, which is no key's name in "
                    "OCR_API_KEYS (a default is per API key)"
                )
            try:
                check_webhook_url(url, self.webhook_policy)
            except BadRequest as exc:
                raise ValueError(f"OCR_WEBHOOK_DEFAULTS[{owner!r}]: {exc.message}") from None
        return self

    @property
    def api_key_owners(self) -> dict[str, str]:
        """SHA-256 hex of each accepted key -> the owner name its jobs are filed under."""
        return parse_api_keys(self.api_keys.get_secret_value()) if self.api_keys else {}

    @property
    def allowed_host_names(self) -> frozenset[str]:
        """OCR_ALLOWED_HOSTS as lower-case names ("*": any; ".example.com": it and below)."""
        return parse_allowed_hosts(self.allowed_hosts)

    @property
    def max_images_per_request(self) -> int:
        """OCR_MAX_BATCH, lowered to the rate limit's smallest amount and the queue cap: a
        request that costs more than either ever allows would be told to retry forever."""
        bounds = _limit_amounts(self.rate_limit) if self.rate_limit else []
        if self.max_queued_per_key:
            bounds.append(self.max_queued_per_key)
        return min([self.max_batch, *bounds])

    @property
    def webhook_keys(self) -> tuple[bytes, ...]:
        """The keys deliveries are signed with (none: webhooks are not sent)."""
        secret = self.webhook_secret
        return parse_secrets(secret.get_secret_value()) if secret else ()

    @property
    def webhook_retry_delays_s(self) -> tuple[float, ...]:
        return parse_retry_schedule(self.webhook_retry_schedule)

    @property
    def webhook_policy(self) -> AddressPolicy:
        return AddressPolicy.parse(self.webhook_allow)

    @property
    def internal_token_value(self) -> str | None:
        return self.internal_token.get_secret_value() if self.internal_token else None

    @property
    def max_request_bytes(self) -> int:
        """Largest request body the API reads: a base64 upload plus room for the JSON around it."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024


def _limit_amounts(spec: str) -> list[int]:
    """How many hits each limit of a rate-limit string allows ("60/minute;1000/hour")."""
    from limits import parse_many

    return [limit.amount for limit in parse_many(spec)]


_KEY_HASH = re.compile(r"sha256:([0-9a-f]{64})")
_OWNER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# OCR_* variables that no setting reads but the project's other tools do (ocr-client, the tests,
# compose), and Kubernetes' service links: a Service "ocr-api" gives every pod OCR_API_PORT,
# OCR_API_SERVICE_HOST and the like.
OTHER_VARIABLES = frozenset(
    {
        "OCR_URL",
        "OCR_API_KEY",
        "OCR_API_PUBLISH",
        "OCR_IMAGE_TAG",
        "OCR_TEST_IMAGE_TAG",
        "OCR_TEST_DATABASE_URL",
        "OCR_REQUIRE_MYSQL",
        "OCR_REQUIRE_DOCKER",
        "OCR_SHARED_DATA",
        "OCR_SCREENSHOT_DIR",
        "OCR_CLIENT_TEST_PYTHON",
    }
)
_SERVICE_LINK = re.compile(r"OCR_\w*?_(SERVICE_HOST|SERVICE_PORT\w*|PORT_\d+_(TCP|UDP|SCTP)\w*)")
# A Service's own link, OCR_API_PORT=tcp://10.0.0.1:5000; OCR_API_PORT=5400 is someone's guess.
_SERVICE_LINK_PORT = re.compile(r"OCR_\w*?_PORT")
_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://.*")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each OCR_* variable that no setting reads, which is otherwise ignored
    without a word (OCR_API_KEY set for OCR_API_KEYS left an API open to anyone)."""
    known = {f"OCR_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        if not name.startswith("OCR_") or name in known or _SERVICE_LINK.fullmatch(name):
            continue
        if _SERVICE_LINK_PORT.fullmatch(name) and _LINK_VALUE.fullmatch(environ[name]):
            continue
        if name == "OCR_API_KEY" and not environ.get("OCR_API_KEYS"):
            warnings.append(
                "OCR_API_KEY is ocr-client's variable; the API takes its keys from OCR_API_KEYS "
                "(unset: every caller is answered)"
            )
        elif name not in OTHER_VARIABLES:
            # Compared without the prefix they all share, which would make anything look close.
            close = difflib.get_close_matches(name[4:], [k[4:] for k in known], n=1, cutoff=0.75)
            hint = f" (did you mean OCR_{close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting, and is ignored{hint}; see docs/settings.md")
    return warnings


SECRET_FIELDS = frozenset({"internal_token", "api_keys", "webhook_secret", "webhook_defaults"})


def _hide_password(url: str) -> str:
    """A URL as it may be printed: ``scheme://user:***@host/...``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def hash_api_key(key: str) -> str:
    """The form OCR_API_KEYS stores a key in."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(spec: str) -> dict[str, str]:
    """Parse "[NAME=]sha256:HEX, ..." into {hex digest: owner name}."""
    owners: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, _, hashed = entry.rpartition("=")
        match = _KEY_HASH.fullmatch(hashed.lower())
        if match is None:
            raise ValueError(
                "each entry must be [NAME=]sha256:<64 hex digits>, the hash of a key "
                "(print one with `ocr-api hash-key KEY`); plain keys are not stored"
            )
        if name and not _OWNER.fullmatch(name):
            raise ValueError("key names may use letters, digits, '_', '.' and '-' (64 at most)")
        owner = name or match.group(1)[:16]
        if owner.lower() in (known.lower() for known in owners.values()):
            # MySQL compares names without case: two owners must not differ only in case.
            raise ValueError(f"two keys are named {owner!r} (names are compared ignoring case)")
        owners[match.group(1)] = owner
    if not owners:
        raise ValueError("no keys given; unset the variable to run without API keys")
    return owners


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; raise SettingsError naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except EnvParsingError as exc:
        # A variable that holds JSON (OCR_WEBHOOK_DEFAULTS) and is not JSON, found before any
        # validator runs; its value may hold credentials: not shown.
        found = re.search(r'field "(\w+)"', str(exc))
        var = f"OCR_{found.group(1).upper()}" if found else "settings"
        raise SettingsError(
            f'invalid settings:\n  {var}: must be a JSON object, e.g. {{"name": "https://..."}}'
        ) from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            var = f"OCR_{field.upper()}" if err["loc"] else "settings"
            if not err["loc"] or field in SECRET_FIELDS:
                # A whole-model error's input is every setting, secrets included.
                shown = "(hidden)"
            elif field == "database_url":
                shown = repr(_hide_password(str(err.get("input"))))
            else:
                shown = repr(err.get("input"))
            lines.append(f"{var}: {err['msg']} (got {shown})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
