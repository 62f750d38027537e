"""credentials: which associated data a row is sealed with (1: row only; 2: row and configuration)

Revision ID: e8f0a2b4c6d3
Revises: d7e9f1a3b5c2
Create Date: 2026-11-28 11:00:00

Every existing row was sealed without its configuration: it is scheme 1 until the next start
re-seals it bound (bot.keys.binding), which needs the master key and so cannot happen here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e8f0a2b4c6d3"
down_revision: str | Sequence[str] | None = "d7e9f1a3b5c2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("credentials", sa.Column("scheme", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    # Bound rows do not open with the older code's associated data: downgrading loses them.
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("scheme")
