"""index jobs by when they finished, for the purge of expired jobs

Create Date: 2026-12-05

The OCR servers delete finished jobs older than OCR_RESULT_TTL_DAYS, a batch at a time, by
finished_at: without an index on it each look scanned the finished jobs (3-10 s at 1.2 million
rows, every lease/2 on every OCR server, in the loop that also requeues a dead server's jobs).
"""
from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
