"""secret cleanups: store copies of credentials left to delete after a move between stores

Revision ID: b3d5f7a9c1e2
Revises: a9b1c3d5e7f4
Create Date: 2026-12-08 12:00:00

``connections-bot migrate-secrets`` records here, in the transaction that moves a connection's
reference to another store, the copy it must then delete in the store the credential came from,
and removes the row once that store deleted it. A run stopped in between finishes it next time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3d5f7a9c1e2"
down_revision: str | Sequence[str] | None = "a9b1c3d5e7f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secret_cleanups",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("store", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_cleanups")),
    )
    op.create_index("ix_secret_cleanups_created_at", "secret_cleanups", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_secret_cleanups_created_at", table_name="secret_cleanups")
    op.drop_table("secret_cleanups")
