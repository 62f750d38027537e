"""rotations: the connection's settings a rotation replaces, shown with the decided request

Revision ID: d7e9f1a3b5c2
Revises: c6d8e0f2a4b1
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d7e9f1a3b5c2"
down_revision: str | Sequence[str] | None = "c6d8e0f2a4b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rotations asked for before this revision did not keep it.
    op.add_column("rotations", sa.Column("replaced_config", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rotations") as batch:
        batch.drop_column("replaced_config")
