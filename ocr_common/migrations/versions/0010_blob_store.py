"""blob store: a job's document lives in the blob store, under the key the job row names

Create Date: 2026-12-12

New jobs keep their document in the blob store (OCR_BLOB_URL) under ``document_key``, null
once it is deleted (README "Blob store"). Jobs queued before keep theirs in ``job_images``, which
the OCR server still reads and empties as they finish: nothing is copied, and the table stays
until a later migration drops it. A nullable ADD COLUMN is instant on MySQL 8.4 and MariaDB
10.11, and a plain ALTER on SQLite.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("document_key", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("document_key")
