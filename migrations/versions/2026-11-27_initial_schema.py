"""initial schema: connections, credentials, verifications, audit_events

Revision ID: 8a1c5e0f2d41
Revises:
Create Date: 2026-11-27 00:00:00

Written to match bot/store/models.py; the CHECK constraints and the partial unique index, which
autogenerate cannot compare on SQLite, are checked by tests/unit/store/test_migrations.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8a1c5e0f2d41"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the enum values at this revision: a migration must not change when code does.
STATUSES = "'pending_approval', 'active', 'rejected', 'expired', 'revoked'"
NAME_HOLDING_STATUSES = "'pending_approval', 'active'"
HEALTHS = "'unknown', 'healthy', 'failing'"
OUTCOMES = (
    "'ok', 'unauthorized', 'forbidden', 'invalid_input', 'unreachable', 'rate_limited', 'provider_error'"
)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("name_key", sa.String(length=256), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("health", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("key_hint", sa.String(length=64), nullable=True),
        sa.Column("credential_version", sa.Integer(), nullable=False),
        sa.Column("last_verified_at", _timestamp(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_connections_status")),
        sa.CheckConstraint(f"health IN ({HEALTHS})", name=op.f("ck_connections_health")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
    )
    op.create_index("ix_connections_team_id_created_at", "connections", ["team_id", "created_at"])
    op.create_index(
        "uq_connections_team_id_name_key",
        "connections",
        ["team_id", "name_key"],
        unique=True,
        sqlite_where=sa.text(f"status IN ({NAME_HOLDING_STATUSES})"),
        postgresql_where=sa.text(f"status IN ({NAME_HOLDING_STATUSES})"),
    )

    op.create_table(
        "credentials",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_credentials_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint(
            "connection_id", "version", "field", name=op.f("uq_credentials_connection_id_version_field")
        ),
    )

    op.create_table(
        "verifications",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("hints", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("actor", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint(f"outcome IN ({OUTCOMES})", name=op.f("ck_verifications_outcome")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_verifications_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
    )
    op.create_index(
        "ix_verifications_connection_id_created_at", "verifications", ["connection_id", "created_at"]
    )

    op.create_table(
        "audit_events",
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        # Not a foreign key: the audit trail outlives the connections it describes.
        sa.Column("connection_id", sa.String(length=36), nullable=True),
        sa.Column("before_status", sa.String(length=32), nullable=True),
        sa.Column("after_status", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_audit_events_team_id_connection_id_created_at",
        "audit_events",
        ["team_id", "connection_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_team_id_connection_id_created_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_verifications_connection_id_created_at", table_name="verifications")
    op.drop_table("verifications")
    op.drop_table("credentials")
    op.drop_index("uq_connections_team_id_name_key", table_name="connections")
    op.drop_index("ix_connections_team_id_created_at", table_name="connections")
    op.drop_table("connections")
