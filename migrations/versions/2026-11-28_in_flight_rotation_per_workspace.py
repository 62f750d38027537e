"""in-flight rotations: one per connection within its workspace, not across every workspace

Revision ID: c6d8e0f2a4b1
Revises: b5c7d9e1f3a2
Create Date: 2026-11-28 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c6d8e0f2a4b1"
down_revision: str | Sequence[str] | None = "b5c7d9e1f3a2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "in_flight_verifications"
OLD = "uq_in_flight_verifications_connection_id"
NEW = "uq_in_flight_verifications_team_id_connection_id"


def upgrade() -> None:
    # Batch mode: SQLite cannot drop a constraint, so the table is copied.
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(OLD, type_="unique")
        batch.create_unique_constraint(NEW, ["team_id", "connection_id"])


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(NEW, type_="unique")
        batch.create_unique_constraint(OLD, ["connection_id"])
