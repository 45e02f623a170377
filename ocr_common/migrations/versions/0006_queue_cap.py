"""index jobs by (status, owner) for the per-key cap on queued jobs; wider options column

Create Date: 2026-12-01

OCR_MAX_QUEUED_PER_KEY counts a key's queued jobs on every submit: the index keeps that count
off the table rows. ``options`` becomes MEDIUMTEXT on MySQL/MariaDB: the page list of a
document of up to OCR_MAX_PAGES=10000 pages can pass TEXT's 64 KiB.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_index("ix_jobs_status_owner", "jobs", ["status", "owner"])
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column(
            "jobs",
            "options",
            existing_type=sa.Text(),
            type_=mysql.MEDIUMTEXT(),
            existing_nullable=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        op.alter_column(
            "jobs",
            "options",
            existing_type=mysql.MEDIUMTEXT(),
            type_=sa.Text(),
            existing_nullable=True,
        )
    op.drop_index("ix_jobs_status_owner", table_name="jobs")
