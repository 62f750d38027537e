"""connections: where an approved credential lives when a secret store holds it

Revision ID: a9b1c3d5e7f4
Revises: f1a3c5e7b9d2
Create Date: 2026-12-08 09:00:00

All three are NULL while the credential is sealed in this database (the ``local`` store, and every
connection before this revision). With an external store they name it (``aws``, ``vault``), the
secret's path there, and the version the bot last wrote, so a re-test can tell a version written
outside the bot.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a9b1c3d5e7f4"
down_revision: str | Sequence[str] | None = "f1a3c5e7b9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("secret_store", sa.String(16), nullable=True))
        batch.add_column(sa.Column("secret_path", sa.String(512), nullable=True))
        batch.add_column(sa.Column("secret_version", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("secret_version")
        batch.drop_column("secret_path")
        batch.drop_column("secret_store")
