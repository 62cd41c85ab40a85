"""Studies: many jobs asked as one question (every combination of prompts, models and parameter sets),
and each job's study (`jobs.study_id`, deleted with its study, indexed to read a study's jobs).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("request", JSON_DOC, nullable=False),
        sa.Column("idempotency_key", sa.String(length=400), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_studies_created", "studies", ["created_at"])
    op.create_index("ix_studies_owner_created", "studies", ["owner", "created_at"])
    op.create_index("uq_studies_idempotency_key", "studies", ["idempotency_key"], unique=True)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("study_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key("fk_jobs_study_id", "studies", ["study_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_jobs_study", ["study_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_study")
        batch.drop_constraint("fk_jobs_study_id", type_="foreignkey")
        batch.drop_column("study_id")
    op.drop_index("uq_studies_idempotency_key", table_name="studies")
    op.drop_index("ix_studies_owner_created", table_name="studies")
    op.drop_index("ix_studies_created", table_name="studies")
    op.drop_table("studies")
