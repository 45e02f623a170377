"""``ocr-migrate``: bring the database schema to the latest Alembic revision."""

from __future__ import annotations

import os
import sys
import time

from alembic import command
from sqlalchemy.exc import OperationalError

from .db import alembic_config, safe_url
from .settings import SettingsError, load_settings

# In a deployment the database may still be starting: wait this long for it.
WAIT_FOR_DATABASE_S = float(os.environ.get("OCR_MIGRATE_WAIT_S", "60"))
RETRY_S = 2.0


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"ocr-migrate: {exc}", file=sys.stderr)
        return 2
    where = safe_url(settings.database_url)
    deadline = time.monotonic() + WAIT_FOR_DATABASE_S
    while True:
        try:
            upgrade(settings.database_url)
            break
        except OperationalError as exc:
            if time.monotonic() + RETRY_S > deadline:
                print(f"ocr-migrate: cannot reach {where}: {exc.orig}", file=sys.stderr)
                return 1
            print(f"ocr-migrate: {where} not reachable yet; retrying", file=sys.stderr)
            time.sleep(RETRY_S)
        except Exception as exc:  # noqa: BLE001 - any failure here is reported, not traced
            print(f"ocr-migrate: could not migrate {where}: {exc}", file=sys.stderr)
            return 1
    print(f"ocr-migrate: {where} is at the latest schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
