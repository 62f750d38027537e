"""in-flight verifications: who is waiting on which check, and the names reserved meanwhile

Revision ID: b5c7d9e1f3a2
Revises: 9e4f6a8b0c35
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b5c7d9e1f3a2"
down_revision: str | Sequence[str] | None = "9e4f6a8b0c35"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the kinds at this revision.
KINDS = "'create', 'rotation'"


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "in_flight_verifications",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("view_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=36), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("deadline", _timestamp(), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("boot_id", sa.String(length=36), nullable=True),
        # An inode number, above 2**31 on Linux: 64 bits.
        sa.Column("pid_namespace", sa.BigInteger(), nullable=True),
        sa.Column("name_key", sa.String(length=256), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f("ck_in_flight_verifications_kind")),
        sa.CheckConstraint(
            "(kind = 'create' AND name_key IS NOT NULL AND connection_id IS NULL)"
            " OR (kind = 'rotation' AND connection_id IS NOT NULL AND name_key IS NULL)",
            name=op.f("ck_in_flight_verifications_target"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_in_flight_verifications")),
        sa.UniqueConstraint("team_id", "name_key", name="uq_in_flight_verifications_team_id_name_key"),
        sa.UniqueConstraint("connection_id", name="uq_in_flight_verifications_connection_id"),
    )
    op.create_index("ix_in_flight_verifications_deadline", "in_flight_verifications", ["deadline"])
    op.create_index("ix_in_flight_verifications_host", "in_flight_verifications", ["host"])


def downgrade() -> None:
    op.drop_index("ix_in_flight_verifications_host", table_name="in_flight_verifications")
    op.drop_index("ix_in_flight_verifications_deadline", table_name="in_flight_verifications")
    op.drop_table("in_flight_verifications")
