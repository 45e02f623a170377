"""page results: a job's pages packed and compressed, read back into the page-result model

Create Date: 2026-12-04

New results go to ``page_results`` (``ocr_common.result.store_pages``: the pages' blocks,
paragraphs, lines and words, a few KB a page); the renderings (text, hOCR, TSV) are made from
them when asked. Results stored before keep their old JSON in ``result`` and are read through
``result.legacy_pages``, the same in every format: nothing is copied. A nullable ADD COLUMN is
instant on MySQL 8.4 and MariaDB 10.11, and a plain ALTER on SQLite.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("page_results", blob, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("page_results")
