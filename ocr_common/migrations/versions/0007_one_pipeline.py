"""which API made a job: the original API's jobs now go the v1 way too

Create Date: 2026-11-29

Before this, a job of the original API was told apart by having no options. From now on it
has them (the defaults, first page) and a result with boxes, so a column says which API made
it. ADD COLUMN ... DEFAULT ... NOT NULL and the UPDATE are taken by MySQL 8.4, MariaDB 10.11
and SQLite alike.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("api", sa.String(8), nullable=False, server_default="v1"))
    op.execute("UPDATE jobs SET api = 'original' WHERE options IS NULL")


def downgrade() -> None:
    # The code before this told the original API's jobs by their missing options.
    op.execute("UPDATE jobs SET options = NULL WHERE api = 'original'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("api")
