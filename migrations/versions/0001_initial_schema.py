"""Initial schema: jobs and the nodes of their trees (models/schema.py as first written).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
NODE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ROOT_ONLY = sa.text("parent_id IS NULL")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("parameters", JSON_DOC, nullable=False),
        sa.Column("chat", sa.Boolean(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("completed_paths", sa.Integer(), nullable=False),
        sa.Column("result", JSON_DOC, nullable=True),
        sa.CheckConstraint("kind IN ('tree', 'logprobs')", name="job_kind"),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                           name="job_status"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_created", "jobs", ["created_at"], unique=False)
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"], unique=False)
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"], unique=False)
    op.create_table(
        "nodes",
        sa.Column("id", NODE_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", NODE_ID, nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("prob", sa.Double(), nullable=False),
        sa.Column("logprob", sa.Double(), nullable=False),
        sa.Column("cumulative_prob", sa.Double(), nullable=False),
        sa.Column("is_finished", sa.Boolean(), nullable=False),
        sa.Column("finish_reason", sa.String(length=16), nullable=True),
        sa.Column("candidates", JSON_DOC, nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("queue_depth", sa.Integer(), nullable=True),
        sa.Column("entropy", sa.Double(), nullable=True),
        sa.Column("expanded_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("uq_nodes_job_parent_token", "nodes", ["job_id", "parent_id", "token_id"], unique=True)
    op.create_index("uq_nodes_job_root", "nodes", ["job_id"], unique=True,
                    postgresql_where=ROOT_ONLY, sqlite_where=ROOT_ONLY)


def downgrade() -> None:
    op.drop_index("uq_nodes_job_root", table_name="nodes")
    op.drop_index("uq_nodes_job_parent_token", table_name="nodes")
    op.drop_table("nodes")
    op.drop_index("ix_jobs_status_created", table_name="jobs")
    op.drop_index("ix_jobs_owner_created", table_name="jobs")
    op.drop_index("ix_jobs_created", table_name="jobs")
    op.drop_table("jobs")
