"""An index on jobs (model, status): /healthz asks, for each model no live worker serves, whether any job
of it is open, in one index lookup however many jobs are queued.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_model_status", "jobs", ["model", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_model_status", table_name="jobs")
