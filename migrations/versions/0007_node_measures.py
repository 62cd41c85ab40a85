"""What a node records beyond the rule's inputs: the model's own probability of its token before the
sampler (`raw_prob`, `raw_logprob`; `prob` is the sampler's), the probability an expanded node's children
leave out (`unexplored_mass`), and the token's bytes where its text is not valid UTF-8 on its own
(`token_bytes`). All nullable: rows written before keep NULL, which readers take as "the same as prob"
(raw) and "not recorded" (mass, bytes).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


COLUMNS = ("raw_prob", "raw_logprob", "unexplored_mass", "token_bytes")


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:  # SQLite rebuilds the table; Postgres adds in place
        batch.add_column(sa.Column("raw_prob", sa.Double(), nullable=True))
        batch.add_column(sa.Column("raw_logprob", sa.Double(), nullable=True))
        batch.add_column(sa.Column("unexplored_mass", sa.Double(), nullable=True))
        batch.add_column(sa.Column("token_bytes", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
