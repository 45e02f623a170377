"""ocr_servers: each OCR server says it is alive, what it reads, and when it stopped

Create Date: 2026-12-04

The API tells a stalled queue from a slow one by these rows: /readyz, a queued job's
"ocr_servers_alive", and GET /v1/languages (what the OCR servers' models read).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008"
down_revision = "0007"

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "ocr_servers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("engines", sa.Integer, nullable=False),
        sa.Column("languages", sa.Text, nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("last_seen_at", Timestamp, nullable=False),
        sa.Column("stopped_at", Timestamp, nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_ocr_servers_last_seen", "ocr_servers", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_ocr_servers_last_seen", table_name="ocr_servers")
    op.drop_table("ocr_servers")
