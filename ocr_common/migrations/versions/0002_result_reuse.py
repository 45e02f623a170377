"""index jobs by image hash, to reuse the result of an image read before

Create Date: 2026-11-29
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_index("ix_jobs_sha256_status", "jobs", ["image_sha256", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_sha256_status", table_name="jobs")
