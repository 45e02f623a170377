"""Database engine and session factories, and the start-up checks both services run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .settings import Settings, SettingsError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Room for the SQL and the other columns around the image in one INSERT packet.
PACKET_HEADROOM_BYTES = 64 * 1024
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine with the connection habits the job queue needs on each backend."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so a claim is atomic.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    connect_args = {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
        **kwargs,
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while the OCR server writes; both processes share the file.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The latest migration; read from the migration files once per process."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(bind: Engine | Connection) -> str | None:
    if isinstance(bind, Connection):
        return MigrationContext.configure(bind).get_current_revision()
    with bind.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(bind: Engine | Connection) -> None:
    """Refuse to run against a database whose schema is not at the latest migration."""
    head = head_revision()
    current = current_revision(bind)
    if current != head:
        raise SettingsError(
            f"database schema is at revision {current or 'none'}, this code needs {head}: "
            "run `ocr-migrate` (or `make migrate`) against OCR_DATABASE_URL first"
        )


def max_packet_bytes(engine: Engine) -> int | None:
    """The largest statement the server takes (MySQL's max_allowed_packet); None: no limit."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return None
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())


def check_packet_size(engine: Engine, settings: Settings) -> None:
    """Images travel as one BLOB: the upload limit must fit in one MySQL packet."""
    packet = max_packet_bytes(engine)
    if packet is None:
        return
    if settings.max_upload_bytes + PACKET_HEADROOM_BYTES > packet:
        raise SettingsError(
            f"OCR_MAX_UPLOAD_BYTES={settings.max_upload_bytes} does not fit in the database's "
            f"max_allowed_packet={packet}: lower OCR_MAX_UPLOAD_BYTES to at most "
            f"{packet - PACKET_HEADROOM_BYTES} or raise max_allowed_packet on the server"
        )


def check_database(engine: Engine, settings: Settings) -> None:
    """Start-up checks: the database answers, its schema is current, uploads fit a packet."""
    try:
        check_schema(engine)
        check_packet_size(engine, settings)
    except OperationalError as exc:
        raise SettingsError(
            f"cannot reach the database at {safe_url(settings.database_url)}: {exc.orig}; "
            "check OCR_DATABASE_URL and that the server is running"
        ) from None


def safe_url(database_url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(database_url).render_as_string(hide_password=True)


def is_connection_error(exc: BaseException) -> bool:
    """True when a database error means the server is unreachable, not that the SQL is wrong."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
