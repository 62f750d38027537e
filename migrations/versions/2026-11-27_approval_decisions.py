"""approval decisions: where the request was posted, who decided, when and why

Revision ID: 5d2e8a4b7c13
Revises: 3f7b2c9d1e60
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d2e8a4b7c13"
down_revision: str | Sequence[str] | None = "3f7b2c9d1e60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("approval_channel", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("approval_ts", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("decided_by", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("decision_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("decision_reason")
        batch.drop_column("decided_at")
        batch.drop_column("decided_by")
        batch.drop_column("approval_ts")
        batch.drop_column("approval_channel")
