"""index for the expiry job: connections by status, oldest first

Revision ID: 7b9c1d3e5f24
Revises: 5d2e8a4b7c13
Create Date: 2026-11-27 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "7b9c1d3e5f24"
down_revision: str | Sequence[str] | None = "5d2e8a4b7c13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_connections_status_created_at", "connections", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_connections_status_created_at", table_name="connections")
