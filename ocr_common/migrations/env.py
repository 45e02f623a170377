"""Alembic environment: the URL comes from the config that ocr_common.migrate builds."""

from pathlib import Path

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from ocr_common.db import make_engine
from ocr_common.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    if url.startswith("sqlite"):
        # Without the services' foreign_keys=ON: SQLite's batch ALTER rebuilds a table by
        # dropping it, which would cascade into job_images and delete every stored image.
        Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, poolclass=pool.NullPool)
    else:
        engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name in ("mysql", "mariadb"):
            create_version_table(connection)
        # Each revision commits with its version stamp: a failure leaves the last one done.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def create_version_table(connection: Connection) -> None:
    """Alembic's own table, as Alembic makes it but in utf8mb4 whatever the server's default
    (every table states its character set: a latin1 server must not change the schema)."""
    connection.execute(
        text(
            "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    )
    connection.commit()


# Online only: ocr-migrate applies revisions to a live database (no --sql script mode).
run_migrations_online()
