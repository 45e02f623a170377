"""``ocr-migrate``: bring the database schema to the latest Alembic revision."""

from __future__ import annotations

import sys

from alembic import command

from .db import alembic_config, safe_url
from .settings import SettingsError, load_settings


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"ocr-migrate: {exc}", file=sys.stderr)
        return 2
    try:
        upgrade(settings.database_url)
    except Exception as exc:  # noqa: BLE001 - any failure here is reported, not traced
        print(
            f"ocr-migrate: could not migrate {safe_url(settings.database_url)}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"ocr-migrate: {safe_url(settings.database_url)} is at the latest schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
