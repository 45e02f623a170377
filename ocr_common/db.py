"""Database engine and session factories, and the start-up checks both services run."""

from __future__ import annotations

import functools
import logging
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from .settings import Settings, SettingsError

log = logging.getLogger(__name__)
T = TypeVar("T")

# The Alembic scripts, as a resource of this package (found in an installed one too).
MIGRATIONS = "ocr_common:migrations"
# ER_NET_PACKET_TOO_LARGE: "Got a packet bigger than 'max_allowed_packet' bytes".
MYSQL_PACKET_TOO_LARGE = 1153
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Longest a lease-path statement waits for a row lock before it fails (and is tried again on
# the next round): far under a lease, so a stuck lock never stalls the dispatcher's loops.
LOCK_WAIT_S = 5
# TCP keepalive probes before a silent peer counts as gone.
KEEPALIVE_PROBES = 3
# Longest pause between two tries while a starting service waits for the database.
STARTUP_RETRY_MAX_S = 2.0
# MySQL/MariaDB error numbers that mean "the server is not there (now)", not "the SQL is
# wrong": can't connect (2002, 2003), gone away or lost mid-query (2006, 2013, 2055), too many
# connections (1040), bad handshake while it starts (1043), shutting down (1053), connection
# killed (1927), idle client dropped by MySQL 8 (4031), a lock wait or deadlock (1205, 1213).
MYSQL_TRANSIENT_ERRNOS = frozenset(
    {1040, 1043, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
)
# SQLite: busy or locked by the other service, which a wait resolves.
SQLITE_TRANSIENT_CODES = frozenset({5, 6})
# MySQL/MariaDB rolled a transaction back to break a deadlock (two transactions locking rows
# or index entries in opposite orders): it is run again at once, as the server's own message
# says, up to this many times in all.
DEADLOCK_ERRNO = 1213
DEADLOCK_TRIES = 3


def make_engine(
    database_url: str, *, session_timeout_s: float | None = None, **kwargs: Any
) -> Engine:
    """An engine with the connection habits the job queue needs on each backend;
    ``session_timeout_s`` (the OCR server's lease): see ``session_bounds_sql``."""
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
    connect_args: dict[str, Any] = {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}
    if session_timeout_s is not None:
        connect_args["init_command"] = session_bounds_sql(session_timeout_s)
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
        **kwargs,
    )
    if session_timeout_s is not None:
        event.listen(engine, "do_connect", functools.partial(_connect, timeout_s=session_timeout_s))
    return engine


def session_bounds_sql(timeout_s: float) -> str:
    """The session settings that bound a vanished client's locks to about ``timeout_s``: the
    server drops a session idle or stuck mid-packet that long, rolling its transaction back."""
    seconds = max(1, math.ceil(timeout_s))
    return (
        f"SET SESSION wait_timeout = {seconds}, net_read_timeout = {seconds}, "
        f"net_write_timeout = {seconds}, innodb_lock_wait_timeout = {LOCK_WAIT_S}"
    )


def _connect(
    dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any], *, timeout_s: float
) -> Any:
    # The client's side: a connection whose database went silent (a partition) is found dead
    # within about timeout_s of quiet instead of the kernel's default two hours (a statement
    # waiting for its answer is bounded by read_timeout). PyMySQL leaves the keepalive timings
    # to the kernel, so it is handed a TCP socket opened here as it would, with them set.
    dbapi = dialect.loaded_dbapi
    conn = dbapi.connect(*cargs, **cparams, defer_connect=True)
    if conn.unix_socket or not hasattr(socket, "TCP_KEEPIDLE"):
        conn.connect()
        return conn
    source = (conn.bind_address, 0) if conn.bind_address else None
    try:
        sock = socket.create_connection((conn.host, conn.port), conn.connect_timeout, source)
    except OSError as exc:  # raised as PyMySQL does: 2003, can't connect
        raise dbapi.OperationalError(
            2003, f"Can't connect to MySQL server on {conn.host!r} ({exc})"
        ) from exc
    interval_s = max(1, math.ceil(timeout_s / (2 * KEEPALIVE_PROBES)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, math.ceil(timeout_s / 2)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    conn.connect(sock)
    return conn


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


def is_deadlock(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, OperationalError) else None
    return orig is not None and bool(orig.args) and orig.args[0] == DEADLOCK_ERRNO


def in_transaction(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """``work`` in one transaction, committed; run again if the database broke a deadlock."""

    def attempt() -> T:
        with sessions.begin() as session:
            return work(session)

    retrying = Retrying(
        retry=retry_if_exception(is_deadlock), stop=stop_after_attempt(DEADLOCK_TRIES), reraise=True
    )
    return retrying(attempt)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
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


def known_revisions() -> set[str]:
    """Every revision this code has a migration for."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {revision.revision for revision in script.walk_revisions()}


def check_schema(bind: Engine | Connection) -> None:
    """Refuse to run against a database whose schema is not at the latest migration."""
    head = head_revision()
    current = current_revision(bind)
    if current != head:
        raise SettingsError(schema_mismatch(current, head))


def schema_mismatch(current: str | None, head: str | None) -> str:
    """Why a database at revision ``current`` is not this code's, and what to do: migrate,
    or (a revision this code has no file for) run the release that migrated it."""
    if current is not None and current not in known_revisions():
        return (
            f"database schema is at revision {current}, which this code does not know (its "
            f"latest is {head}): a newer release migrated it; run that release, or restore the "
            "database's backup from before it"
        )
    return (
        f"database schema is at revision {current or 'none'}, this code needs {head}: "
        "run `ocr-migrate` (or `make migrate`) against OCR_DATABASE_URL first"
    )


def max_packet_bytes(engine: Engine) -> int | None:
    """The largest statement the database takes (max_allowed_packet; None for SQLite), which
    bounds the results the OCR server writes."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return None
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())


def is_packet_too_large(exc: BaseException) -> bool:
    """True when MySQL/MariaDB refused a statement larger than its max_allowed_packet."""
    orig = getattr(exc, "orig", None)
    return bool(orig is not None and orig.args and orig.args[0] == MYSQL_PACKET_TOO_LARGE)


def check_database(engine: Engine, settings: Settings) -> int | None:
    """Start-up checks (the database answers, its schema is current), waiting for it as
    ``wait_for_database`` does; returns ``max_packet_bytes``."""

    def check() -> int | None:
        check_schema(engine)
        return max_packet_bytes(engine)

    try:
        return wait_for_database(settings, check)
    except DBAPIError as exc:
        raise SettingsError(
            f"the database at {safe_url(settings.database_url)} refused a start-up query: "
            f"{exc.orig}"
        ) from None


def wait_for_database(settings: Settings, action: Callable[[], T]) -> T:
    """Run ``action``, again while the database is down or starting, up to OCR_STARTUP_WAIT_S
    (then SettingsError); an error waiting cannot fix (a password, SQL) is raised at once."""
    where = safe_url(settings.database_url)

    def waiting(state: object) -> None:
        outcome = getattr(state, "outcome", None)
        error = outcome.exception() if outcome is not None else None
        reason = getattr(error, "orig", None) or error
        log.warning("database at %s not reachable yet (%s); waiting", where, reason)

    retrying = Retrying(
        retry=retry_if_exception(is_connection_error),
        stop=stop_after_delay(settings.startup_wait_s),
        wait=wait_exponential(multiplier=0.1, max=STARTUP_RETRY_MAX_S),
        before_sleep=waiting,
        reraise=True,
    )
    try:
        return retrying(action)
    except DBAPIError as exc:
        if not is_connection_error(exc):
            raise
        raise SettingsError(
            f"cannot reach the database at {where} within {settings.startup_wait_s:g} s "
            f"(OCR_STARTUP_WAIT_S): {exc.orig}; check OCR_DATABASE_URL and that the server "
            "is running"
        ) from None


def safe_url(database_url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(database_url).render_as_string(hide_password=True)


def is_connection_error(exc: BaseException) -> bool:
    """True when the database is unreachable or busy and trying again can help."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in SQLITE_TRANSIENT_CODES
    errno = orig.args[0] if orig is not None and orig.args else None
    if isinstance(errno, int):
        return errno in MYSQL_TRANSIENT_ERRNOS
    # No error number (a driver's own socket error): the connection is what failed.
    return True
