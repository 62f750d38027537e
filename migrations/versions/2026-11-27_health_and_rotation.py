"""health schedule, alerts and rotation: when to re-test, the open alert, credential age, rotations

Revision ID: 9e4f6a8b0c35
Revises: 7b9c1d3e5f24
Create Date: 2026-11-27 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e4f6a8b0c35"
down_revision: str | Sequence[str] | None = "7b9c1d3e5f24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the rotation statuses at this revision.
ROTATION_STATUSES = "'pending_approval', 'approved', 'rejected', 'expired', 'cancelled'"


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("credential_created_at", _timestamp(), nullable=True))
        batch.add_column(sa.Column("next_check_at", _timestamp(), nullable=True))
        batch.add_column(sa.Column("failing_since", _timestamp(), nullable=True))
        batch.add_column(sa.Column("alert_channel", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("alert_ts", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("alerted_at", _timestamp(), nullable=True))
        batch.add_column(sa.Column("rotation_reminded_at", _timestamp(), nullable=True))
    # Existing credentials are as old as their connections: no rotation existed before.
    op.execute("UPDATE connections SET credential_created_at = created_at")
    op.create_index("ix_connections_status_next_check_at", "connections", ["status", "next_check_at"])

    op.create_table(
        "rotations",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("key_hint", sa.String(length=64), nullable=True),
        sa.Column("approval_channel", sa.String(length=32), nullable=True),
        sa.Column("approval_ts", sa.String(length=32), nullable=True),
        sa.Column("decided_by", sa.String(length=32), nullable=True),
        sa.Column("decided_at", _timestamp(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.CheckConstraint(f"status IN ({ROTATION_STATUSES})", name=op.f("ck_rotations_status")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_rotations_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rotations")),
    )
    op.create_index("ix_rotations_status_created_at", "rotations", ["status", "created_at"])
    op.create_index(
        "uq_rotations_connection_id_pending",
        "rotations",
        ["connection_id"],
        unique=True,
        sqlite_where=sa.text("status = 'pending_approval'"),
        postgresql_where=sa.text("status = 'pending_approval'"),
    )


def downgrade() -> None:
    op.drop_index("uq_rotations_connection_id_pending", table_name="rotations")
    op.drop_index("ix_rotations_status_created_at", table_name="rotations")
    op.drop_table("rotations")
    op.drop_index("ix_connections_status_next_check_at", table_name="connections")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("rotation_reminded_at")
        batch.drop_column("alerted_at")
        batch.drop_column("alert_ts")
        batch.drop_column("alert_channel")
        batch.drop_column("failing_since")
        batch.drop_column("next_check_at")
        batch.drop_column("credential_created_at")
