"""A third job kind, score: the text it scores gets a column of its own (`jobs.text`, null for the other
kinds), and the kind check takes "score".

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite rebuilds the table in batch mode (it cannot alter a constraint in place); Postgres alters it.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("text", sa.Text(), nullable=True))
        batch.drop_constraint("job_kind", type_="check")
        batch.create_check_constraint("job_kind", "kind IN ('tree', 'logprobs', 'score')")


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'score'")  # the old check admits no score job
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("job_kind", type_="check")
        batch.create_check_constraint("job_kind", "kind IN ('tree', 'logprobs')")
        batch.drop_column("text")
