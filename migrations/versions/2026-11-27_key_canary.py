"""key canary: one sealed value that ties the database to its master key

Revision ID: 3f7b2c9d1e60
Revises: 8a1c5e0f2d41
Create Date: 2026-11-27 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f7b2c9d1e60"
down_revision: str | Sequence[str] | None = "8a1c5e0f2d41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_canaries",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_key_canaries_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_canaries")),
    )


def downgrade() -> None:
    op.drop_table("key_canaries")
