"""webhooks: a job's webhook_url, and the outbox of deliveries

Create Date: 2026-12-10

A delivery row is written in the transaction that ends its job and claimed by any OCR server's
sender, as jobs are (README "Webhooks"). A nullable ADD COLUMN is instant on MySQL 8.4 and
MariaDB 10.11, and a plain ALTER on SQLite.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision = "0008"

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2048), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("last_attempt_at", Timestamp, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
        mysql_engine="InnoDB",
        # Explicit, as every table: job_id must match jobs.id for the foreign key.
        mysql_charset="utf8mb4",
    )
    op.create_index(
        "ix_webhook_deliveries_claim", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_webhook_deliveries_job", "webhook_deliveries", ["job_id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_url")
