"""Node candidates kept as the JSON text the tree shows, not as a JSON document.

The tree endpoint splices the stored text into its response; a JSONB column would be re-encoded on
every read (and parsed on every write). Existing rows keep their content: Postgres writes the JSONB
back as its text, a valid JSON array of the same candidates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:  # SQLite rebuilds the table; Postgres alters in place
        batch.alter_column("candidates", type_=sa.Text(), existing_type=JSON_DOC,
                           postgresql_using="candidates::text")


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.alter_column("candidates", type_=JSON_DOC, existing_type=sa.Text(),
                           postgresql_using="candidates::jsonb")
