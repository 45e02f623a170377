"""the request id that made a job, for the OCR server's log lines about it

Create Date: 2026-11-29
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("request_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "request_id")
