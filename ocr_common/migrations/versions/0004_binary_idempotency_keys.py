"""compare Idempotency-Keys byte for byte on MySQL/MariaDB

Create Date: 2026-11-29

The table's default collation (utf8mb4_general_ci) compares without case, so "Key-1" and
"key-1" from two clients clashed on the unique index; SQLite already compares exactly.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column(
            "jobs",
            "idempotency_key",
            existing_type=sa.String(255),
            type_=mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"),
            existing_nullable=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column(
            "jobs",
            "idempotency_key",
            existing_type=mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"),
            type_=sa.String(255),
            existing_nullable=True,
        )
