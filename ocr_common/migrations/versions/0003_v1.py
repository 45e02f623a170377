"""v1 API: options, format, page progress, result JSON, idempotency keys

Create Date: 2026-11-29
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("options", sa.Text, nullable=True))
        batch.add_column(sa.Column("format", sa.String(16), nullable=True))
        batch.add_column(sa.Column("pages_total", sa.Integer, nullable=True))
        batch.add_column(sa.Column("pages_done", sa.Integer, nullable=True))
        batch.add_column(sa.Column("result", LongText, nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_sha256", sa.String(64), nullable=True))
    op.create_index("ix_jobs_created", "jobs", ["created_at", "id"])
    op.create_index("ux_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_jobs_idempotency_key", table_name="jobs")
    op.drop_index("ix_jobs_created", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in (
            "request_sha256",
            "idempotency_key",
            "result",
            "pages_done",
            "pages_total",
            "format",
            "options",
        ):
            batch.drop_column(column)
