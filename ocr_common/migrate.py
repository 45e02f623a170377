"""``ocr-migrate``: bring the database schema to the latest Alembic revision, one revision a
transaction, so a failure names the revision that failed and the one the database is left at."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import pool, text
from sqlalchemy.exc import DBAPIError

from .db import (
    alembic_config,
    current_revision,
    head_revision,
    known_revisions,
    make_engine,
    safe_url,
    schema_mismatch,
    wait_for_database,
)
from .observability import configure_logging, say
from .settings import SettingsError, load_settings, unknown_variables

# The MySQL/MariaDB named lock one ocr-migrate holds while it migrates, and how long another
# waits for it.
MIGRATION_LOCK = "ocr_migrate"
MIGRATION_LOCK_WAIT_S = 600


def _revision(database_url: str) -> str | None:
    """The revision the database is at now."""
    engine = make_engine(database_url, poolclass=pool.NullPool)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def pending_revisions(database_url: str) -> list[tuple[str, str]]:
    """(revision, what it does) of each migration not applied yet, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    revisions = list(script.iterate_revisions("heads", _revision(database_url)))
    return [(rev.revision, (rev.doc or "").splitlines()[0]) for rev in reversed(revisions)]


def upgrade(database_url: str, report: bool = False) -> None:
    """Apply every pending migration, one revision at a time, one ocr-migrate at a time."""
    with _one_at_a_time(database_url):
        current = _revision(database_url)
        if current is not None and current not in known_revisions():
            raise RuntimeError(schema_mismatch(current, head_revision()))
        for revision, doc in pending_revisions(database_url):
            command.upgrade(alembic_config(database_url), revision)
            if report:
                say("ocr-migrate", f"applied {revision}: {doc}", logging.INFO)


@contextlib.contextmanager
def _one_at_a_time(database_url: str) -> Iterator[None]:
    """On MySQL/MariaDB, hold the server's named lock MIGRATION_LOCK: a second ocr-migrate (two
    releases at once, a Job and a person) waits for the first, then finds nothing pending. Two
    at once failed, and the loser told to undo part of a revision the winner was applying."""
    engine = make_engine(database_url, poolclass=pool.NullPool)
    try:
        if engine.dialect.name not in ("mysql", "mariadb"):
            yield  # SQLite: one file, on one machine
            return
        with engine.connect() as connection:
            lock = {"name": MIGRATION_LOCK, "wait": MIGRATION_LOCK_WAIT_S}
            if connection.execute(text("SELECT GET_LOCK(:name, :wait)"), lock).scalar() != 1:
                raise RuntimeError(
                    f"another ocr-migrate has held the lock {MIGRATION_LOCK!r} for "
                    f"{MIGRATION_LOCK_WAIT_S} s; is one stuck?"
                )
            try:
                yield
            finally:  # also freed by the server should this connection die
                connection.execute(text("SELECT RELEASE_LOCK(:name)"), lock)
    finally:
        engine.dispose()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        say("ocr-migrate", str(exc))
        return 2
    # The wait for the database logs, in the format asked for (JSON lines for a collector).
    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_variables(os.environ):
        say("ocr-migrate", f"warning: {warning}", logging.WARNING)
    where = safe_url(settings.database_url)
    try:
        wait_for_database(settings, lambda: upgrade(settings.database_url, report=True))
    except SettingsError as exc:  # the database stayed out of reach
        say("ocr-migrate", str(exc))
        return 1
    except DBAPIError as exc:
        say("ocr-migrate", failure(settings.database_url, exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - any failure here is reported, not traced
        say("ocr-migrate", f"could not migrate {where}: {exc}")
        return 1
    say("ocr-migrate", f"{where} is at the latest schema", logging.INFO)
    return 0


def failure(database_url: str, exc: DBAPIError) -> str:
    """What failed and where the database was left, for a person to act on."""
    try:
        pending = pending_revisions(database_url)
        at = _revision(database_url) or "none"
    except Exception:  # noqa: BLE001 - the first error is the one to report
        return f"migration failed: {exc.orig}"
    failed = f"{pending[0][0]} ({pending[0][1]})" if pending else "(none pending)"
    return (
        f"migration {failed} failed with an SQL error, not retried: {exc.orig}. The database "
        f"is at revision {at}; on MySQL/MariaDB part of {failed.split()[0]}'s DDL may have been "
        "applied (DDL is not transactional there): fix the cause, undo that part, run again"
    )


if __name__ == "__main__":
    sys.exit(main())
