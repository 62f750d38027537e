"""bulk re-tests: the `test all` running in each workspace, one at a time across replicas

Revision ID: c8e0f2a4b6d1
Revises: e8f0a2b4c6d3
Create Date: 2026-11-28 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c8e0f2a4b6d1"
down_revision: str | Sequence[str] | None = "e8f0a2b4c6d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bulk_retests",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("started_by", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("team_id", name=op.f("pk_bulk_retests")),
    )


def downgrade() -> None:
    op.drop_table("bulk_retests")
